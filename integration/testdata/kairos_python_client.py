import asyncio
import websockets
import json

async def consume_metrics():
    uri = "ws://localhost:5900/ws/metrics"
    async with websockets.connect(uri) as websocket:
        # Send subscription
        subscription = {
            "metrics": ["requests_total", "success_rate"],
            "interval_seconds": 1,
            "include_history": True
        }
        await websocket.send(json.dumps(subscription))

        # Receive messages
        async for message in websocket:
            data = json.loads(message)

            if data["type"] == "Snapshot":
                print(f"Total: {data['requests_total']}, "
                      f"Success Rate: {data['success_rate']:.2f}%")
            elif data["type"] == "TimeSeries":
                print(f"Historical {data['metric_name']}: "
                      f"{len(data['data_points'])} points")
            elif data["type"] == "Error":
                print(f"Error: {data['message']}")

if __name__ == "__main__":
    asyncio.run(consume_metrics())
