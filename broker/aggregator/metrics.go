package aggregator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the aggregator's own series. They always exist, registered or
// not, so the code never checks for nil.
type metrics struct {
	received      prometheus.Counter
	decodeErrors  prometheus.Counter
	rejected      prometheus.Counter
	duplicates    prometheus.Counter
	resetBoot     prometheus.Counter
	resetDecrease prometheus.Counter
	ticks         prometheus.Counter
	published     prometheus.Counter
	historyErrors prometheus.Counter
	publishTime   prometheus.Histogram

	// Computed at scrape time from the aggregator's state.
	funcs []prometheus.Collector
}

func newMetrics(ns string, a *Aggregator) *metrics {
	const sub = "aggregator"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	resets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "report_resets_total",
		Help: "Counter resets detected in gateway reports, by reason: boot (new boot id) or decrease (a cumulative counter went down).",
	}, []string{"reason"})
	m := &metrics{
		received:      counter("reports_received_total", "Gateway report messages received."),
		decodeErrors:  counter("report_decode_errors_total", "Gateway report messages that could not be decoded or failed validation."),
		rejected:      counter("reports_rejected_total", "Decoded reports the merge refused (their counts would overflow the cluster's)."),
		duplicates:    counter("report_duplicates_total", "Reports ignored as duplicate, reordered, or late from an instance's previous boot."),
		resetBoot:     resets.WithLabelValues("boot"),
		resetDecrease: resets.WithLabelValues("decrease"),
		ticks:         counter("ticks_total", "Once-a-second merge ticks computed, leading or not."),
		published:     counter("snapshots_published_total", "Snapshots published on NATS."),
		historyErrors: counter("history_write_errors_total", "Snapshots whose write to the history stream was not acknowledged: an error, an ack timeout, or back-pressure."),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshot_publish_duration_seconds",
			Help: "Time to publish one tick's snapshots until the history stream acknowledged them all; a tick still unacknowledged at the next second is observed then.",
			// 1 ms to ~1 s: a tick must be done well within its second.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 11),
		}),
	}
	m.funcs = []prometheus.Collector{
		resets,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "tracked_instances",
			Help: "Gateway instances whose state the aggregator keeps, live or stale.",
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.merger.Len())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "invalid_snapshots_total",
			Help: "Merged snapshots left out because they failed validation; anything but 0 is a bug.",
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.merger.InvalidSnapshots())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "leader",
			Help: "1 when this aggregator publishes snapshots, 0 when it only merges.",
		}, func() float64 { return boolFloat(a.leader.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "history_stream_ready",
			Help: "1 when the history stream was last created or updated successfully.",
		}, func() float64 { return boolFloat(a.streamReady.Load()) }),
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := append([]prometheus.Collector{
		m.received, m.decodeErrors, m.rejected, m.duplicates, m.ticks, m.published, m.historyErrors, m.publishTime,
	}, m.funcs...)
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("register aggregator metrics: %w", err)
		}
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
