function updateSubscription(newMetrics, newInterval) {
  ws.send(JSON.stringify({
    metrics: newMetrics,
    interval_seconds: newInterval,
    include_history: false
  }));
}

// Change subscription after 10 seconds
setTimeout(() => {
  updateSubscription(['requests_total'], 5);
}, 10000);
