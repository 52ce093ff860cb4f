package gateway

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// metrics exports a Node's Recorder and report counts to Prometheus. The
// request series are named <ns>_proxy_*: <ns>_gateway_* with instance and region
// labels is what the leading aggregator relays for every instance, and the two
// must never be summed together by a query. It is a custom Collector that reads the Recorder at scrape time and emits const
// metrics, so the request hot path updates exactly one set of atomics (the
// Recorder's) and Prometheus and the NATS reports can never disagree about
// what was counted.
type metrics struct {
	rec *Recorder

	published     atomic.Uint64
	publishErrors atomic.Uint64

	requests     *prometheus.Desc
	duration     *prometheus.Desc
	active       *prometheus.Desc
	reports      *prometheus.Desc
	reportErrors *prometheus.Desc
	bucketBounds [len(proto.LatencyBounds)]float64 // seconds
}

func newMetrics(namespace string, rec *Recorder) *metrics {
	m := &metrics{
		rec: rec,
		requests: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "proxy", "requests_total"),
			"Requests proxied by this gateway instance, by status class; 499 (client went away) counts as 4xx.",
			[]string{"code"}, nil),
		duration: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "proxy", "request_duration_seconds"),
			"Time from receiving a request to finishing its response, in the protocol's fixed latency buckets.",
			nil, nil),
		active: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "proxy", "active_requests"),
			"Requests in flight.",
			nil, nil),
		reports: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "gateway", "reports_published_total"),
			"Counter reports published to NATS.",
			nil, nil),
		reportErrors: prometheus.NewDesc(
			prometheus.BuildFQName(namespace, "gateway", "report_publish_errors_total"),
			"Counter reports that could not be published to NATS.",
			nil, nil),
	}
	for i, b := range proto.LatencyBounds {
		m.bucketBounds[i] = b.Seconds()
	}
	return m
}

// onPublish is the collector.Publisher's OnPublish hook.
func (m *metrics) onPublish(err error) {
	if err != nil {
		m.publishErrors.Add(1)
		return
	}
	m.published.Add(1)
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.requests
	ch <- m.duration
	ch <- m.active
	ch <- m.reports
	ch <- m.reportErrors
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	var rd reading
	m.rec.read(&rd)

	for c, name := range classNames {
		ch <- prometheus.MustNewConstMetric(m.requests, prometheus.CounterValue, float64(rd.classes[c]), name)
	}

	// Prometheus buckets are cumulative; the Recorder's are per bucket. The
	// count is the sum of the buckets read, so the histogram is
	// self-consistent (+Inf == count) even while requests complete.
	buckets := make(map[float64]uint64, len(m.bucketBounds))
	var cum uint64
	for i, le := range m.bucketBounds {
		cum += rd.buckets[i]
		buckets[le] = cum
	}
	cum += rd.buckets[len(m.bucketBounds)]
	ch <- prometheus.MustNewConstHistogram(m.duration, cum, float64(rd.sumNanos)/1e9, buckets)

	ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, float64(rd.active))
	ch <- prometheus.MustNewConstMetric(m.reports, prometheus.CounterValue, float64(m.published.Load()))
	ch <- prometheus.MustNewConstMetric(m.reportErrors, prometheus.CounterValue, float64(m.publishErrors.Load()))
}
