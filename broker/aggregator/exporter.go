package aggregator

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// gatewayCollector relays every gateway instance's own figures to Prometheus,
// built as const metrics at scrape time from the merge state.
//
// Counters are the RAW cumulative values of the instance's current boot, not
// the merged never-decreasing totals: Prometheus' rate() and increase()
// already handle counter resets, and relaying raw values keeps each series
// the same as if Prometheus scraped the gateway itself. No sample carries a
// timestamp; an instance silent for ExportTTL disappears, and <ns>_gateway_up
// says whether it is live, standing in for the scrape-level up of a target
// Prometheus does not scrape directly. Scrape with honor_labels: true. Only
// the leading aggregator exports; followers serve an empty page.
type gatewayCollector struct {
	mu     sync.Locker // guards merger
	merger *Merger
	now    func() time.Time
	ttl    time.Duration
	// leading, when set, gates the export: only the leading aggregator
	// exports, since every aggregator holds the same series and two
	// exporters of one series interleave into fake counter resets. The
	// series move with the leadership, their values continuous.
	leading func() bool

	requests, reqErrors, duration, active, up, lastReport, startTime *prometheus.Desc
	bounds                                                           [len(proto.LatencyBounds)]float64
}

func newGatewayCollector(ns string, mu sync.Locker, m *Merger, now func() time.Time, ttl time.Duration) *gatewayCollector {
	labels := []string{"instance", "region"}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "gateway", name), help, labels, nil)
	}
	c := &gatewayCollector{
		mu: mu, merger: m, now: now, ttl: ttl,
		requests:   desc("requests_total", "Requests the gateway instance served in its current boot."),
		reqErrors:  desc("request_errors_total", "Requests of the current boot that failed: status >= 400, upstream failures, cancellations."),
		duration:   desc("request_duration_seconds", "Response times of the current boot's requests."),
		active:     desc("active_connections", "Requests in flight at the instance's last report."),
		up:         desc("up", "1 if the instance reported recently and has not shut down, else 0."),
		lastReport: desc("last_report_timestamp_seconds", "When the aggregator applied the instance's last report, as a Unix time."),
		startTime:  desc("start_time_seconds", "When the instance's current boot started, as a Unix time."),
	}
	for i, b := range proto.LatencyBounds {
		c.bounds[i] = b.Seconds()
	}
	return c
}

// Describe sends the fixed descriptors, so that the registry checks them.
func (c *gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.reqErrors, c.duration, c.active, c.up, c.lastReport, c.startTime} {
		ch <- d
	}
}

// Collect copies the state out under the lock and builds the metrics after
// releasing it, so that a scrape holds up report intake only for the copy.
func (c *gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	if c.leading != nil && !c.leading() {
		return
	}
	now := c.now()
	c.mu.Lock()
	st := c.merger.AppendInstanceStatus(nil, now)
	c.mu.Unlock()
	for i := range st {
		s := &st[i]
		if now.Sub(s.LastReport) > c.ttl {
			continue
		}
		lv := []string{s.Instance, s.Region}
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(s.Counters.RequestsTotal), lv...)
		ch <- prometheus.MustNewConstMetric(c.reqErrors, prometheus.CounterValue, float64(s.Counters.RequestsError), lv...)

		// The histogram's count is the sum of its buckets (so _count equals
		// the +Inf bucket, as Prometheus requires), its sum the reported
		// duration sum.
		buckets := make(map[float64]uint64, len(c.bounds))
		var cum uint64
		for j, b := range c.bounds {
			cum += s.LatencyBuckets[j]
			buckets[b] = cum
		}
		cum += s.LatencyBuckets[len(c.bounds)]
		if s.LatencyHistogram != nil {
			ch <- newHiresHistogram(c.duration, cum, float64(s.Counters.DurationSumNanos)/1e9, buckets, s.LatencyHistogram, lv)
		} else {
			ch <- prometheus.MustNewConstHistogram(c.duration, cum, float64(s.Counters.DurationSumNanos)/1e9, buckets, lv...)
		}

		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.ActiveConnections), lv...)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolFloat(s.Up), lv...)
		ch <- prometheus.MustNewConstMetric(c.lastReport, prometheus.GaugeValue, unixSeconds(s.LastReport), lv...)
		if !s.StartTime.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.startTime, prometheus.GaugeValue, unixSeconds(s.StartTime), lv...)
		}
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
