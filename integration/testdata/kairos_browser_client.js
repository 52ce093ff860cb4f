// Connect to WebSocket metrics endpoint
const ws = new WebSocket('ws://localhost:5900/ws/metrics');

ws.onopen = () => {
  console.log('Connected to metrics stream');

  // Subscribe to specific metrics with 2-second updates
  ws.send(JSON.stringify({
    metrics: ['requests_total', 'active_connections'],
    interval_seconds: 2,
    include_history: false
  }));
};

ws.onmessage = (event) => {
  const message = JSON.parse(event.data);

  switch (message.type) {
    case 'Snapshot':
      console.log('Metrics:', {
        total: message.requests_total,
        success_rate: message.success_rate,
        avg_response_time: message.avg_response_time
      });
      updateDashboard(message);
      break;

    case 'TimeSeries':
      console.log(`Historical data for ${message.metric_name}:`, message.data_points);
      renderChart(message);
      break;

    case 'Error':
      console.error('Server error:', message.message);
      break;

    case 'Heartbeat':
      console.log('Heartbeat received');
      break;
  }
};

ws.onerror = (error) => {
  console.error('WebSocket error:', error);
};

ws.onclose = () => {
  console.log('Disconnected from metrics stream');
  // Implement reconnection logic here
  setTimeout(() => reconnect(), 5000);
};

function updateDashboard(metrics) {
  document.getElementById('total-requests').textContent = metrics.requests_total;
  document.getElementById('success-rate').textContent = `${metrics.success_rate.toFixed(2)}%`;
  document.getElementById('avg-response-time').textContent = `${metrics.avg_response_time.toFixed(2)}ms`;
}
