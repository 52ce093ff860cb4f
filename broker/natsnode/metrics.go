package natsnode

import (
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the embedded server's own figures (connections,
// messages, bytes, slow consumers, routes, JetStream usage) as Prometheus
// metrics named <namespace>_nats_*. It reads the server's statistics at
// scrape time, so nothing is counted twice and nothing drifts.
func (n *Node) Collector(namespace string) prometheus.Collector {
	if namespace == "" {
		namespace = "meridian"
	}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "nats", name), help, nil, nil)
	}
	return &collector{
		ns:            n.ns,
		conns:         d("connections", "Client connections open now."),
		connsTotal:    d("connections_total", "Client connections accepted since the server started."),
		subs:          d("subscriptions", "Subscriptions registered now."),
		inMsgs:        d("messages_received_total", "Messages received from clients, routes, gateways and leaf nodes."),
		outMsgs:       d("messages_sent_total", "Messages sent to clients, routes, gateways and leaf nodes."),
		inBytes:       d("received_bytes_total", "Payload bytes received."),
		outBytes:      d("sent_bytes_total", "Payload bytes sent."),
		slow:          d("slow_consumers_total", "Clients disconnected for being slow consumers."),
		routes:        d("routes", "Cluster routes connected now."),
		jsEnabled:     d("jetstream_enabled", "1 when JetStream runs on this server."),
		jsMem:         d("jetstream_memory_bytes", "Memory used by JetStream streams."),
		jsStore:       d("jetstream_storage_bytes", "Storage used by JetStream streams."),
		jsReservedSto: d("jetstream_reserved_storage_bytes", "Storage reserved by JetStream limits."),
		jsAPI:         d("jetstream_api_requests_total", "JetStream API requests served."),
		jsAPIErrors:   d("jetstream_api_errors_total", "JetStream API requests that failed."),
		up:            d("up", "1 while the server is running."),
	}
}

type collector struct {
	ns                                                                                   *server.Server
	conns, connsTotal, subs, inMsgs, outMsgs, inBytes, outBytes, slow, routes, jsEnabled *prometheus.Desc
	jsMem, jsStore, jsReservedSto, jsAPI, jsAPIErrors, up                                *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.connsTotal, c.subs, c.inMsgs, c.outMsgs, c.inBytes, c.outBytes,
		c.slow, c.routes, c.jsEnabled, c.jsMem, c.jsStore, c.jsReservedSto, c.jsAPI, c.jsAPIErrors, c.up} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	if !c.ns.Running() {
		gauge(c.up, 0)
		return
	}
	v, err := c.ns.Varz(&server.VarzOptions{})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.up, err)
		return
	}
	gauge(c.up, 1)
	gauge(c.conns, float64(v.Connections))
	counter(c.connsTotal, float64(v.TotalConnections))
	gauge(c.subs, float64(v.Subscriptions))
	counter(c.inMsgs, float64(v.InMsgs))
	counter(c.outMsgs, float64(v.OutMsgs))
	counter(c.inBytes, float64(v.InBytes))
	counter(c.outBytes, float64(v.OutBytes))
	counter(c.slow, float64(v.SlowConsumers))
	gauge(c.routes, float64(v.Routes))
	js := v.JetStream.Stats
	if js == nil {
		gauge(c.jsEnabled, 0)
		return
	}
	gauge(c.jsEnabled, 1)
	gauge(c.jsMem, float64(js.Memory))
	gauge(c.jsStore, float64(js.Store))
	gauge(c.jsReservedSto, float64(js.ReservedStore))
	counter(c.jsAPI, float64(js.API.Total))
	counter(c.jsAPIErrors, float64(js.API.Errors))
}
