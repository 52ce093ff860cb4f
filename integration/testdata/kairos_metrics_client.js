class MetricsClient {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.reconnectDelay = 1000;
    this.maxReconnectDelay = 30000;
  }

  connect() {
    this.ws = new WebSocket(this.url);

    this.ws.onopen = () => {
      console.log('Connected');
      this.reconnectDelay = 1000; // Reset delay on successful connection
      this.sendSubscription();
    };

    this.ws.onclose = () => {
      console.log('Disconnected, reconnecting...');
      setTimeout(() => {
        this.reconnectDelay = Math.min(
          this.reconnectDelay * 2,
          this.maxReconnectDelay
        );
        this.connect();
      }, this.reconnectDelay);
    };

    this.ws.onmessage = (event) => this.handleMessage(event);
  }

  sendSubscription() {
    this.ws.send(JSON.stringify({
      metrics: [],
      interval_seconds: 1,
      include_history: false
    }));
  }

  handleMessage(event) {
    const message = JSON.parse(event.data);
    // Process message...
  }
}

const client = new MetricsClient('ws://localhost:5900/ws/metrics');
client.connect();
