const WebSocket = require('ws');

const ws = new WebSocket('ws://localhost:5900/ws/metrics');

ws.on('open', () => {
  console.log('Connected to metrics stream');

  // Subscribe to all metrics with history
  ws.send(JSON.stringify({
    metrics: [], // Empty = all metrics
    interval_seconds: 5,
    include_history: true
  }));
});

ws.on('message', (data) => {
  const message = JSON.parse(data);

  switch (message.type) {
    case 'Snapshot':
      console.log({
        timestamp: message.timestamp,
        requests: message.requests_total,
        errors: message.requests_error,
        active: message.active_connections
      });
      break;

    case 'TimeSeries':
      console.log(`${message.metric_name}: ${message.data_points.length} data points`);
      break;

    case 'Error':
      console.error('Server error:', message.message);
      break;
  }
});

ws.on('error', (error) => {
  console.error('WebSocket error:', error);
});

ws.on('close', () => {
  console.log('Connection closed');
});
