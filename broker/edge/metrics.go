package edge

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// Error types (errors_total label values).
const (
	errTypeBadSubscription = "bad_subscription"
	errTypeOversized       = "oversized"
	errTypeProtocol        = "protocol"
	errTypeBinary          = "binary"
	errTypeHandshake       = "handshake"
	errTypeBadQuery        = "bad_query"
	errTypeUnknownScope    = "unknown_scope"
	errTypeBusy            = "busy"
)

var errorTypes = []string{
	errTypeBadSubscription, errTypeOversized, errTypeProtocol, errTypeBinary, errTypeHandshake,
	errTypeBadQuery, errTypeUnknownScope, errTypeBusy,
}

// metrics are the edge's Prometheus metrics. Counters and histograms are
// updated where things happen (label children resolved once, so the hot
// path does no lookups or allocations); gauges of live things are computed
// from the registry at scrape time.
type metrics struct {
	opened             prometheus.Counter
	closedByReason     map[string]prometheus.Counter
	msgsSent           prometheus.Counter
	bytesSent          prometheus.Counter
	msgsRecv           prometheus.Counter
	bytesRecv          prometheus.Counter
	errorsByType       map[string]prometheus.Counter
	conflated          prometheus.Counter
	idleTimeouts       prometheus.Counter
	slowConsumers      prometheus.Counter
	handshakesRejected prometheus.Counter
	memoryReleases     prometheus.Counter
	rejections         map[string]prometheus.Counter
	snapshotsAccepted  prometheus.Counter
	snapshotsStale     prometheus.Counter
	snapshotsInvalid   prometheus.Counter
	snapshotsFuture    prometheus.Counter
	snapshotMsgs       [3]prometheus.Counter // by proto.ScopeKind
	historyLoadErrors  prometheus.Counter
	historyServed      prometheus.Counter
	historyRateLimited prometheus.Counter
	historyFailed      prometheus.Counter
	historyDuration    prometheus.Histogram
	replayed           prometheus.Counter
	replaysTruncated   prometheus.Counter
	lifetime           prometheus.Histogram
	deliveryLag        prometheus.Histogram
	tickLag            prometheus.Histogram
}

func newMetrics(e *Edge, ns string, reg prometheus.Registerer) (*metrics, error) {
	const sub = "edge"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "connections_closed_total",
		Help: "WebSocket connections closed, by reason.",
	}, []string{"reason"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "errors_total",
		Help: "Client errors, by type: bad_subscription, oversized, protocol, binary, handshake, bad_query (upgrade URL), unknown_scope, busy (too many queued subscription messages).",
	}, []string{"type"})
	snaps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "snapshots_received_total",
		Help: "Live snapshots received from NATS, by result: accepted, stale (not newer than the one held), invalid, future (dated more than proto.MaxSnapshotSkew ahead of this edge's clock; ignored).",
	}, []string{"result"})
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "snapshot_messages_total",
		Help: "Snapshot messages delivered by NATS, by scope kind: the edge's fan-in (instances only while followed).",
	}, []string{"kind"})
	dropped := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "snapshot_messages_dropped_total",
		Help: "Snapshot messages the NATS client dropped because the edge's intake fell behind (a slow consumer; logged at most once a minute).",
	}, func() float64 { return float64(e.follow.dropped()) })
	hist := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "history_requests_total",
		Help: "History requests (include_history or since), by result: served, rate_limited, failed (a JetStream read failed).",
	}, []string{"result"})
	rejections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "rejections_total",
		Help: "Requests refused by admission, by reason: no_token, invalid_token, expired_token (401); origin, scope (403); " +
			"addr_conns, upgrade_rate, lookup_rate, rest_rate (429); edge_full, handshakes (503); plaintext (plain HTTP on TLS).",
	}, []string{"reason"})
	m := &metrics{
		rejections:         make(map[string]prometheus.Counter, len(rejectReasons)),
		opened:             counter("connections_opened_total", "WebSocket connections upgraded."),
		closedByReason:     make(map[string]prometheus.Counter, len(closeReasons)),
		msgsSent:           counter("messages_sent_total", "WebSocket frames written completely."),
		bytesSent:          counter("sent_bytes_total", "Bytes written to WebSocket connections."),
		msgsRecv:           counter("messages_received_total", "WebSocket messages and control frames received."),
		bytesRecv:          counter("received_bytes_total", "Bytes read from WebSocket connections."),
		errorsByType:       make(map[string]prometheus.Counter, len(errorTypes)),
		conflated:          counter("snapshots_conflated_total", "Unsent snapshots replaced by a newer one for a slow connection."),
		idleTimeouts:       counter("idle_timeouts_total", "Connections closed because nothing arrived for IdleTimeout."),
		slowConsumers:      counter("slow_consumer_disconnects_total", "Connections closed for exceeding MaxPendingBytes or WriteTimeout."),
		handshakesRejected: counter("handshakes_rejected_total", "Connections closed unread because too many handshakes were in flight."),
		memoryReleases:     counter("memory_releases_total", "Collections that returned free memory to the OS after a burst of upgrades (see MemoryReleaseUpgrades)."),
		historyLoadErrors:  counter("history_load_errors_total", "Failed attempts to backfill a scope's in-memory history window from JetStream (retried)."),
		historyServed:      hist.WithLabelValues("served"),
		historyRateLimited: hist.WithLabelValues("rate_limited"),
		historyFailed:      hist.WithLabelValues("failed"),
		historyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "history_request_duration_seconds",
			Help:    "Time a history worker spent preparing a history request (memory, rollups, replay).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		replayed:          counter("replayed_snapshots_total", "Snapshots sent by since replays."),
		replaysTruncated:  counter("replays_truncated_total", "Since replays cut to MaxReplaySnapshots."),
		snapshotsAccepted: snaps.WithLabelValues("accepted"),
		snapshotsStale:    snaps.WithLabelValues("stale"),
		snapshotsInvalid:  snaps.WithLabelValues("invalid"),
		snapshotsFuture:   snaps.WithLabelValues("future"),
		lifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "connection_duration_seconds",
			Help:    "Lifetime of closed WebSocket connections.",
			Buckets: []float64{1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600},
		}),
		deliveryLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "delivery_lag_seconds",
			Help:    "From a snapshot's time to its being written to a connection.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		tickLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "tick_lag_seconds",
			Help:    "From a connection's scheduled snapshot tick to the snapshot being written.",
			Buckets: []float64{.001, .0025, .005, .01, .015, .025, .05, .1, .25, .5, 1},
		}),
	}
	for k := range m.snapshotMsgs {
		m.snapshotMsgs[k] = msgs.WithLabelValues(scopeKinds[k])
	}
	for _, r := range closeReasons {
		m.closedByReason[r] = closed.WithLabelValues(r)
	}
	for _, r := range rejectReasons {
		m.rejections[r] = rejections.WithLabelValues(r)
	}
	for _, t := range errorTypes {
		m.errorsByType[t] = errs.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.opened, closed, m.msgsSent, m.bytesSent, m.msgsRecv, m.bytesRecv, errs, m.conflated,
		m.idleTimeouts, m.slowConsumers, m.handshakesRejected, m.memoryReleases, snaps, m.historyLoadErrors, m.lifetime, m.deliveryLag, m.tickLag,
		hist, m.historyDuration, rejections, m.replayed, m.replaysTruncated, msgs, dropped,
		newStateCollector(e, ns, sub),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register edge metrics: %w", err)
		}
	}
	return m, nil
}

// rejected counts a refusal by admission.
func (m *metrics) rejected(reason string) {
	if c, ok := m.rejections[reason]; ok {
		c.Inc()
	}
}

// closed counts a closed connection.
func (m *metrics) closed(reason string, lifetime time.Duration) {
	if c, ok := m.closedByReason[reason]; ok {
		c.Inc()
	}
	m.lifetime.Observe(lifetime.Seconds())
}

// stateCollector reports gauges computed from the edge's state at scrape
// time, so they cannot drift from reality.
type stateCollector struct {
	e           *Edge
	conns       *prometheus.Desc
	subs        *prometheus.Desc
	ready       *prometheus.Desc
	histLoad    *prometheus.Desc
	scopesKnown *prometheus.Desc
	scopesUsed  *prometheus.Desc
	histScopes  *prometheus.Desc
	histQueue   *prometheus.Desc
	followed    *prometheus.Desc
}

// scopeKinds are the kind label values, indexed by proto.ScopeKind.
var scopeKinds = [...]string{"cluster", "region", "instance"}

func newStateCollector(e *Edge, ns, sub string) *stateCollector {
	return &stateCollector{
		e:     e,
		conns: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "connections"), "Open WebSocket connections.", nil, nil),
		subs: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "subscriptions"),
			"Open WebSocket connections by subscribed interval.", []string{"interval_seconds"}, nil),
		ready: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "ready"),
			"1 when the edge is ready: serving, connected to NATS, fresh cluster snapshot.", nil, nil),
		histLoad: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "history_loaded"),
			"1 once the cluster's history window was backfilled from JetStream.", nil, nil),
		scopesKnown: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "scopes_known"),
			"Scopes whose newest snapshot the edge holds (seen live, or found in history by a subscription).", nil, nil),
		scopesUsed: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "scopes_served"),
			"Scopes at least one connection is subscribed to, by kind.", []string{"kind"}, nil),
		histScopes: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "history_scopes"),
			"Scopes whose history window is held in memory.", nil, nil),
		histQueue: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "history_queue_connections"),
			"Connections waiting for a history worker.", nil, nil),
		followed: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "followed_instances"),
			"Instances whose snapshots the edge is subscribed to: those its connections follow, and for FollowGrace after the last left.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.conns
	ch <- c.subs
	ch <- c.ready
	ch <- c.histLoad
	ch <- c.scopesKnown
	ch <- c.scopesUsed
	ch <- c.histScopes
	ch <- c.histQueue
	ch <- c.followed
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var byInterval [proto.MaxIntervalSeconds + 1]int
	n := 0
	c.e.reg.each(func(conn *conn) {
		n++
		if i := conn.interval.Load(); i >= 0 && int(i) < len(byInterval) {
			byInterval[i]++
		}
	})
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(n))
	for i, k := range byInterval {
		if k > 0 {
			ch <- prometheus.MustNewConstMetric(c.subs, prometheus.GaugeValue, float64(k), strconv.Itoa(i))
		}
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, b2f(ready(c.e)))
	ch <- prometheus.MustNewConstMetric(c.histLoad, prometheus.GaugeValue, b2f(c.e.hist.cluster.loaded.Load()))
	known, served := c.e.scopes.census()
	ch <- prometheus.MustNewConstMetric(c.scopesKnown, prometheus.GaugeValue, float64(known))
	for k, n := range served {
		ch <- prometheus.MustNewConstMetric(c.scopesUsed, prometheus.GaugeValue, float64(n), scopeKinds[k])
	}
	ch <- prometheus.MustNewConstMetric(c.histScopes, prometheus.GaugeValue, float64(c.e.hist.rings()))
	ch <- prometheus.MustNewConstMetric(c.histQueue, prometheus.GaugeValue, float64(c.e.pool.queued()))
	ch <- prometheus.MustNewConstMetric(c.followed, prometheus.GaugeValue, float64(c.e.follow.instances()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func ready(e *Edge) bool {
	_, ok := e.Ready()
	return ok
}
