use tokio_tungstenite::{connect_async, tungstenite::Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

#[tokio::main]
async fn main() {
    let url = "ws://localhost:5900/ws/metrics";

    let (ws_stream, _) = connect_async(url)
        .await
        .expect("Failed to connect");

    println!("Connected to metrics stream");

    let (mut write, mut read) = ws_stream.split();

    // Send subscription
    let subscription = json!({
        "metrics": ["requests_total", "response_time_avg"],
        "interval_seconds": 2,
        "include_history": false
    });

    write.send(Message::Text(subscription.to_string()))
        .await
        .expect("Failed to send subscription");

    // Read messages
    while let Some(msg) = read.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let event: serde_json::Value = serde_json::from_str(&text)
                    .expect("Failed to parse JSON");

                match event["type"].as_str() {
                    Some("Snapshot") => {
                        println!("Metrics - Total: {}, Success Rate: {}%",
                            event["requests_total"],
                            event["success_rate"]);
                    }
                    Some("Error") => {
                        eprintln!("Error: {}", event["message"]);
                    }
                    _ => {}
                }
            }
            Ok(Message::Close(_)) => break,
            Err(e) => {
                eprintln!("Error: {}", e);
                break;
            }
            _ => {}
        }
    }
}
