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
	rejected      *prometheus.CounterVec
	duplicates    prometheus.Counter
	resetBoot     prometheus.Counter
	resetDecrease prometheus.Counter
	ticks         prometheus.Counter
	published     prometheus.Counter
	historyErrors prometheus.Counter
	ensureErrors  prometheus.Counter
	publishTime   prometheus.Histogram
	rollups       prometheus.Counter
	leaderChanges prometheus.Counter
	stateErrors   prometheus.Counter
	restoreErrors prometheus.Counter
	heldBack      prometheus.Counter
	ignored       *prometheus.CounterVec
	refilled      prometheus.Counter
	refillErrors  prometheus.Counter

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
		received:     counter("reports_received_total", "Gateway report messages received."),
		decodeErrors: counter("report_decode_errors_total", "Gateway report messages that could not be decoded or failed validation."),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "reports_rejected_total",
			Help: "Decoded reports refused, by reason: subject_mismatch (payload names another instance or region than its subject), counter_jump, seq_gap, future_start, overflow, invalid, max_instances, max_regions, region_not_in_shard (a region shard's report of another region). Nothing of a refused report is merged.",
		}, []string{"reason"}),
		duplicates:    counter("report_duplicates_total", "Reports ignored as duplicate, reordered, or late from an instance's previous boot."),
		resetBoot:     resets.WithLabelValues("boot"),
		resetDecrease: resets.WithLabelValues("decrease"),
		ticks:         counter("ticks_total", "Once-a-second merge ticks computed, leading or not."),
		published:     counter("snapshots_published_total", "Snapshots published on NATS."),
		historyErrors: counter("history_write_errors_total", "Snapshots and rollups whose write to their stream was not acknowledged: an error, an ack timeout, or back-pressure."),
		ensureErrors:  counter("history_stream_ensure_errors_total", "Failed attempts to create or update the history and rollup streams and see them answer (each retried; logged once per condition)."),
		rollups:       counter("rollups_published_total", "1-minute rollups published on NATS."),
		leaderChanges: counter("leadership_changes_total", "Times this aggregator gained or lost the leader lease."),
		stateErrors:   counter("state_write_errors_total", "Failed writes of the merge state to the state bucket, including states too large for one NATS message."),
		heldBack:      counter("snapshots_held_back_total", "Snapshots whose counters would have gone below the scope's last published ones and were published at those instead; anything but 0 means this aggregator missed reports another leader applied."),
		refilled:      counter("history_refilled_total", "Snapshots and rollups published live-only during a JetStream outage and written to their stream once it recovered (including those it had stored already)."),
		refillErrors:  counter("history_refill_errors_total", "Refills of the history interrupted by a failed write (the store failed again); the rest is written once it recovers."),
		restoreErrors: counter("state_restore_errors_total", "Take-overs that could not read the persisted merge state (retried), or found it unusable (overwritten)."),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshot_publish_duration_seconds",
			Help: "Time from the start of a leading tick's publishing (snapshots, merge state, rollups) until every publish was acknowledged; a tick still unacknowledged at the next second is observed then.",
			// 1 ms to ~1 s: a tick must be done well within its second.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 11),
		}),
	}
	m.ignored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "snapshots_ignored_total",
		Help: "Snapshots and rollups seen on NATS that were not adopted into the book of what was published, by reason: while_leading (another's, seen by the leader), future (dated beyond the allowed clock skew), not_lease_holder (not published by the current lease holder).",
	}, []string{"reason"})
	for _, r := range []string{ignoredLeading, ignoredFuture, ignoredForeign} {
		m.ignored.WithLabelValues(r)
	}
	for r := RejectInvalid; r <= RejectSubject; r++ {
		m.rejected.WithLabelValues(r.String()) // every reason exported from 0
	}
	if a.cfg.Tier == TierRegion {
		m.rejected.WithLabelValues(RejectShard.String())
	}
	m.funcs = []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "snapshot_holds_refused_total",
			Help: "Published counters too far ahead of this aggregator's own to have come from a real leader, which it therefore did not hold its snapshots at (see snapshots_held_back_total); anything but 0 means a forged snapshot was published.",
		}, func() float64 {
			a.book.mu.Lock()
			defer a.book.mu.Unlock()
			return float64(a.book.refused)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "max_instances",
			Help: "The cap on tracked instances (--max-instances): reports of new instances beyond it are rejected with reason max_instances.",
		}, func() float64 { return float64(a.merger.cfg.MaxInstances) }),
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
			Help: "1 when this aggregator leads and publishes snapshots, 0 when it only merges.",
		}, func() float64 { return boolFloat(a.Leader()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "state_size_bytes",
			Help: "Size of the merge state last persisted, as stored (gzipped when large).",
		}, func() float64 { return float64(a.stateSize.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "state_chunks",
			Help: "Chunks the merge state last persisted was stored in (statechunks.go); 0 when it fit in one NATS message.",
		}, func() float64 { return float64(a.stateChunks.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "state_last_write_timestamp_seconds",
			Help: "When this aggregator last persisted the merge state, as a Unix time; 0 if never.",
		}, func() float64 { return float64(a.stateWritten.Load()) / 1e9 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "replay_buffered_reports",
			Help: "Reports kept for replay after a take-over: the last of each instance's current and previous boot.",
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.replay.len())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "history_stream_ready",
			Help: "1 when the history and rollup streams were last created or updated successfully.",
		}, func() float64 { return boolFloat(a.streamReady.Load()) }),
	}
	m.funcs = append(m.funcs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "history_refill_pending",
			Help: "Snapshots and rollups published live-only and not yet written to their stream.",
		}, func() float64 { return float64(a.gap.len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "history_refill_dropped_total",
			Help: "Snapshots and rollups published live-only that were dropped unwritten: older than --refill-window or beyond --refill-bytes; the history keeps their gap.",
		}, func() float64 { return float64(a.gap.droppedTotal()) }),
	)
	m.funcs = append(m.funcs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_queue_length",
			Help: "Instance rollups waiting to be written by the paced rollup writer, in flight excluded; it rises at each minute and drains over --rollup-spread.",
		}, func() float64 { return float64(a.rollq.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_queue_bytes",
			Help: "Memory held by those waiting instance rollups (snapshots and histogram buckets), approximately.",
		}, func() float64 { return float64(a.rollq.size()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rollups_dropped_total",
			Help: "Instance rollups dropped unwritten because they waited longer than the rollup stream can deduplicate a retry (3 minutes): the store accepted fewer rollups than there are instances per minute.",
		}, func() float64 { d, _ := a.rollq.counts(); return float64(d) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rollup_retries_total",
			Help: "Instance rollup writes that failed or were not acknowledged in time and were queued again.",
		}, func() float64 { _, r := a.rollq.counts(); return float64(r) }),
	)
	m.funcs = append(m.funcs, a.interestCollectors(ns)...)
	m.funcs = append(m.funcs, a.tierCollectors(ns)...)
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := append([]prometheus.Collector{
		m.received, m.decodeErrors, m.rejected, m.duplicates, m.ticks, m.published, m.historyErrors, m.ensureErrors, m.publishTime,
		m.rollups, m.leaderChanges, m.stateErrors, m.restoreErrors, m.heldBack, m.ignored, m.refilled, m.refillErrors,
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
