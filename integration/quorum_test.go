package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// clusterWatch records the snapshots of one scope a live NATS subscriber
// receives and checks that no second repeats and no total goes backwards.
type clusterWatch struct {
	mu     sync.Mutex
	secs   map[int64]time.Time // second → receipt
	snaps  map[int64]proto.Snapshot
	last   proto.Snapshot
	faults []string
}

func newWatch() *clusterWatch {
	return &clusterWatch{secs: map[int64]time.Time{}, snaps: map[int64]proto.Snapshot{}}
}

func (w *clusterWatch) on(msg *nats.Msg) {
	s, err := proto.DecodeSnapshot(msg.Data)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.faults = append(w.faults, err.Error())
		return
	}
	if w.last.Version != 0 && (!s.Time.After(w.last.Time) || s.RequestsTotal < w.last.RequestsTotal) {
		w.faults = append(w.faults, fmt.Sprintf("second %v total %d after second %v total %d", s.Time, s.RequestsTotal, w.last.Time, w.last.RequestsTotal))
	}
	w.last = s
	w.secs[s.Time.Unix()] = time.Now()
	w.snaps[s.Time.Unix()] = s
}

// seconds counts the snapshots of seconds in [from, to).
func (w *clusterWatch) seconds(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for sec := range w.secs {
		if sec >= from.Unix() && sec < to.Unix() {
			n++
		}
	}
	return n
}

// receivedBetween returns the snapshots received in [from, to).
func (w *clusterWatch) receivedBetween(from, to time.Time) map[int64]proto.Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[int64]proto.Snapshot{}
	for sec, at := range w.secs {
		if !at.Before(from) && at.Before(to) {
			out[sec] = w.snaps[sec]
		}
	}
	return out
}

// logRecorder keeps the message of every log record, for counting lines.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
	from int // see mark
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := r.Time.Format("05.000") + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "op" || a.Key == "reason" {
			m += " " + a.String()
		}
		return true
	})
	l.msgs = append(l.msgs, m)
	return nil
}

func (l *logRecorder) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// mark starts counting afresh: count sees only the records after it.
func (l *logRecorder) mark() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.from = len(l.msgs)
}

// count is the number of records since the mark whose message starts with
// prefix.
func (l *logRecorder) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs[l.from:] {
		if strings.HasPrefix(m[len("05.000 "):], prefix) {
			n++
		}
	}
	return n
}

// quorumAgg is an aggregator of the quorum rig with its own connection and
// log, stopped gracefully by stop or at cleanup.
type quorumAgg struct {
	agg    *aggregator.Aggregator
	logs   *logRecorder
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func startQuorumAgg(t *testing.T, url, id string) *quorumAgg {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	q := &quorumAgg{logs: &logRecorder{}, done: make(chan struct{})}
	q.agg, err = aggregator.New(aggregator.Config{
		NATS: nc, Logger: slog.New(q.logs), ID: id, StateReplicas: 3,
		History: history.StreamConfig{Replicas: 3}, Rollups: history.StreamConfig{Replicas: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	go func() {
		defer close(q.done)
		if err := q.agg.Run(ctx); err != nil {
			t.Errorf("aggregator %s: Run: %v", id, err)
		}
	}()
	t.Cleanup(func() { q.stop(t) })
	return q
}

func (q *quorumAgg) stop(t *testing.T) {
	q.once.Do(func() {
		q.cancel()
		select {
		case <-q.done:
		case <-time.After(15 * time.Second):
			t.Errorf("aggregator %s did not stop", q.agg.ID())
		}
	})
}

// wsWatch is a WebSocket client of the edge that records what it receives.
type wsWatch struct {
	name   string
	mu     sync.Mutex
	secs   map[int64]time.Time // snapshot second → first receipt
	last   proto.Event
	errs   []string
	faults []string
}

// watchWS subscribes a client to sub and records its events until cleanup.
func watchWS(t *testing.T, url, name string, sub map[string]any) *wsWatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, err := wsclient.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Subscribe(ctx, sub); err != nil {
		t.Fatal(err)
	}
	w := &wsWatch{name: name, secs: map[int64]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := ws.Next(context.Background())
			if err != nil {
				return
			}
			w.on(ev)
		}
	}()
	t.Cleanup(func() {
		ws.Close()
		<-done
	})
	return w
}

func (w *wsWatch) on(ev proto.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev.Type {
	case proto.EventError:
		w.errs = append(w.errs, ev.Message)
	case proto.EventSnapshot:
		// The cadence repeats the newest snapshot while no newer one
		// arrives; anything else must be newer, with totals not lower.
		total := ev.Values["requests_total"]
		if w.last.Type != "" {
			prev := w.last.Values["requests_total"]
			repeat := ev.Timestamp.Equal(w.last.Timestamp) && total == prev
			if !repeat && (!ev.Timestamp.After(w.last.Timestamp) || total < prev) {
				w.faults = append(w.faults, fmt.Sprintf("%s: second %s total %v after second %s total %v",
					w.name, ev.Timestamp, total, w.last.Timestamp, prev))
			}
		}
		w.last = ev
		if _, ok := w.secs[ev.Timestamp.Unix()]; !ok {
			w.secs[ev.Timestamp.Unix()] = time.Now()
		}
	}
}

// seconds counts the snapshot seconds in [from, to) received at most fresh
// after their second.
func (w *wsWatch) seconds(from, to time.Time, fresh time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for sec, at := range w.secs {
		if sec >= from.Unix() && sec < to.Unix() && at.Sub(time.Unix(sec, 0)) <= fresh {
			n++
		}
	}
	return n
}

func (w *wsWatch) errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

func (w *wsWatch) newest() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last.Timestamp
}

// readyz is the edge's /readyz answer.
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestLiveViewThroughQuorumLoss runs two aggregators and an edge with two
// WebSocket clients (cluster and region scope) on a three-node JetStream
// cluster while gateways report, and stops two of the nodes: the lease store
// has no quorum, core NATS on the third node still carries the reports, and
// the snapshots keep coming every second, fresh, with no stale Error. Each
// aggregator logs once that the lease store is unavailable and once that it
// recovered. When the nodes return, leadership resumes and the seconds
// published live-only are refilled into the history. Then every aggregator
// stops: each client gets one Error saying since when the data is stale,
// and the edge's /readyz says so, until a new aggregator takes over. The
// totals end exactly at what the gateways reported, never having gone
// backwards or repeated a second.
func TestLiveViewThroughQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node JetStream cluster")
	}
	c := natstest.StartCluster(t, 3)
	connect0 := func() *nats.Conn {
		nc, err := nats.Connect(c.URL(0), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	aggs := []*quorumAgg{startQuorumAgg(t, c.URL(0), "agg-1"), startQuorumAgg(t, c.URL(0), "agg-2")}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{Listener: ln, NATS: connect0(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, "edge", e.Run, e.Shutdown)
	edgeURL := "http://" + e.Addr().String()

	watch, euWatch := newWatch(), newWatch()
	obs := connect0()
	for subject, w := range map[string]*clusterWatch{
		proto.SnapshotSubject(proto.ClusterScope()):    watch,
		proto.SnapshotSubject(proto.RegionScope("eu")): euWatch,
	} {
		sub, err := obs.Subscribe(subject, w.on)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}

	// Three gateways report every 200 ms until stopped.
	pub := connect0()
	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	var sentMu sync.Mutex
	var sent uint64
	load.Go(func() {
		seq := uint64(0)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			seq++
			for g := range 3 {
				r := proto.Report{
					Version: proto.ReportVersion, Instance: fmt.Sprintf("gw-%d", g), Region: "eu", BootID: "b", Seq: seq,
					Time: time.Now(), StartTime: time.Now().Add(-time.Hour), Interval: 200 * time.Millisecond,
					Counters: proto.Counters{RequestsTotal: 10 * seq, RequestsSuccess: 10 * seq, LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
				}
				data, err := r.Encode()
				if err == nil {
					err = pub.Publish(proto.ReportSubject(r.Region, r.Instance), data)
				}
				if err != nil {
					t.Errorf("publish report: %v", err)
					return
				}
			}
			sentMu.Lock()
			sent = 30 * seq
			sentMu.Unlock()
		}
	})
	defer func() {
		stopLoad()
		load.Wait()
	}()
	wait.For(t, 60*time.Second, "cluster snapshots with reports", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.last.RequestsTotal > 0
	})
	wait.For(t, 15*time.Second, "edge ready", func() bool { _, ok := e.Ready(); return ok })
	wsURL := "ws://" + e.Addr().String() + "/ws/metrics"
	clients := []*wsWatch{
		watchWS(t, wsURL, "cluster client", map[string]any{"metrics": []string{"requests_total"}}),
		watchWS(t, wsURL, "region client", map[string]any{"metrics": []string{"requests_total"}, "region": "eu"}),
	}
	for _, cl := range clients {
		wait.For(t, 10*time.Second, cl.name+" receiving fresh snapshots", func() bool {
			return cl.seconds(time.Now().Add(-3*time.Second), time.Now().Add(time.Second), time.Second) > 0
		})
	}

	// (a) Quorum lost: the live view goes on, fresh, without a stale Error.
	// (A fresh cluster's JetStream may have been unavailable at the start:
	// count the log lines of this outage.)
	for _, q := range aggs {
		wait.For(t, 30*time.Second, q.agg.ID()+" with the lease store working", func() bool {
			return q.logs.count("lease store unavailable") == q.logs.count("lease store recovered")
		})
		q.logs.mark()
	}
	c.Stop(1)
	c.Stop(2)
	lost := time.Now()
	// After the lease lapses (2 s TTL), the last leader goes on live-only.
	from := lost.Add(4 * time.Second).Truncate(time.Second)
	to := from.Add(6 * time.Second)
	wait.For(t, 20*time.Second, "six seconds without quorum", func() bool { return time.Now().After(to.Add(time.Second)) })
	if n := watch.seconds(from, to); n < 5 {
		t.Errorf("without quorum: cluster snapshots for %d of the 6 seconds from %s, want them flowing", n, from.Format(time.TimeOnly))
	}
	for _, cl := range clients {
		if n := cl.seconds(from, to, 2*time.Second); n < 5 {
			t.Errorf("without quorum: %s got fresh snapshots for %d of the 6 seconds from %s, want them flowing", cl.name, n, from.Format(time.TimeOnly))
		}
		if errs := cl.errors(); len(errs) > 0 {
			t.Errorf("without quorum, live-only working: %s got Errors %q, want none", cl.name, errs)
		}
	}
	// The aggregator that published live-only saw the store fail; a
	// follower may only have read the lease, which can still work.
	liveOnly := 0
	for _, q := range aggs {
		n := q.logs.count("lease store unavailable")
		if q.logs.count("publishing live-only") > 0 {
			liveOnly++
			if n != 1 {
				t.Errorf("%s published live-only and logged %q %d times, want once: %q", q.agg.ID(), "lease store unavailable", n, q.logs.all())
			}
		} else if n > 1 {
			t.Errorf("%s logged %q %d times, want once at most: %q", q.agg.ID(), "lease store unavailable", n, q.logs.all())
		}
	}
	if liveOnly == 0 {
		t.Errorf("no aggregator published live-only")
	}

	for _, i := range []int{1, 2} {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	restarted := time.Now()
	back := restarted.Add(20 * time.Second).Truncate(time.Second)
	wait.For(t, 60*time.Second, "snapshots after quorum returned", func() bool { return watch.seconds(back, back.Add(3*time.Second)) >= 2 })

	// (c) Once unavailable, once recovered, per aggregator.
	for _, q := range aggs {
		if q.logs.count("lease store unavailable") == 0 {
			if r := q.logs.count("lease store recovered"); r != 0 {
				t.Errorf("%s logged that the lease store recovered %d times, never having logged it unavailable", q.agg.ID(), r)
			}
			continue
		}
		// Logged once the store has worked for a while (10 s), so that the
		// relapses of a recovering cluster are not told as new outages.
		if err := wait.Until(context.Background(), 40*time.Second, func() bool {
			return q.logs.count("lease store recovered") > 0
		}); err != nil {
			t.Fatalf("%s: no line saying that the lease store recovered: %v: %q", q.agg.ID(), err, q.logs.all())
		}
		if u, r := q.logs.count("lease store unavailable"), q.logs.count("lease store recovered"); u != 1 || r != 1 {
			t.Errorf("%s logged the lease store unavailable %d times and recovered %d times, want once each: %q", q.agg.ID(), u, r, q.logs.all())
		}
	}

	// (d) The history holds every second published live-only, as published.
	js, err := jetstream.New(obs)
	if err != nil {
		t.Fatal(err)
	}
	for scope, w := range map[proto.Scope]*clusterWatch{proto.ClusterScope(): watch, proto.RegionScope("eu"): euWatch} {
		live := w.receivedBetween(lost, restarted)
		if len(live) < 5 {
			t.Fatalf("%s: %d snapshots received during the outage", scope, len(live))
		}
		var missing []string
		err := wait.Until(context.Background(), 30*time.Second, func() bool {
			lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stored, err := history.Load(lctx, js, scope, lost.Add(-time.Second), 1000)
			if err != nil {
				return false
			}
			have := map[int64]uint64{}
			for _, s := range stored {
				have[s.Time.Unix()] = s.RequestsTotal
			}
			missing = missing[:0]
			for sec, s := range live {
				if total, ok := have[sec]; !ok {
					missing = append(missing, fmt.Sprintf("%s absent", time.Unix(sec, 0).Format(time.TimeOnly)))
				} else if total != s.RequestsTotal {
					missing = append(missing, fmt.Sprintf("%s total %d, live %d", time.Unix(sec, 0).Format(time.TimeOnly), total, s.RequestsTotal))
				}
			}
			return len(missing) == 0
		})
		if err != nil {
			t.Fatalf("%s: %d of the %d seconds published during the outage (from %s) are not in the history as published: %v",
				scope, len(missing), len(live), lost.Format(time.TimeOnly), missing)
		}
	}
	wait.For(t, 30*time.Second, "an aggregator logging the refill", func() bool {
		return aggs[0].logs.count("history refilled")+aggs[1].logs.count("history refilled") > 0
	})
	refilled := 0
	for _, q := range aggs {
		n := q.logs.count("history refilled")
		if n > 1 {
			t.Errorf("%s logged the refill %d times, want at most once", q.agg.ID(), n)
		}
		refilled += n
	}
	if refilled == 0 {
		t.Errorf("no aggregator logged the refill")
	}

	// (b) Really stale: no aggregator at all, the edge up. One Error per
	// client naming the second since which the data is stale; /readyz
	// says so; both clear when a new aggregator takes over.
	for _, q := range aggs {
		q.stop(t)
	}
	stoppedAt := time.Now()
	for _, cl := range clients {
		wait.For(t, 10*time.Second, cl.name+" told the data is stale", func() bool { return len(cl.errors()) > 0 })
		stale := cl.newest()
		if errs := cl.errors(); len(errs) != 1 || !strings.HasPrefix(errs[0], "data stale since "+stale.UTC().Format(time.RFC3339)+":") {
			t.Errorf("%s: Errors %q, want one saying the data is stale since %s", cl.name, errs, stale.UTC().Format(time.RFC3339))
		}
	}
	var code int
	var reason string
	wait.For(t, 10*time.Second, "/readyz not ready", func() bool {
		code, reason = readyz(t, edgeURL)
		return code != http.StatusOK
	})
	if !strings.Contains(reason, "data stale since ") {
		t.Errorf("/readyz answered %d %q, want the time since when the data is stale", code, reason)
	}
	startQuorumAgg(t, c.URL(0), "agg-3")
	for _, cl := range clients {
		wait.For(t, 20*time.Second, cl.name+" receiving fresh snapshots again", func() bool {
			return cl.seconds(stoppedAt, time.Now().Add(time.Second), time.Second) >= 2
		})
	}
	wait.For(t, 10*time.Second, "/readyz ready again", func() bool {
		code, reason = readyz(t, edgeURL)
		return code == http.StatusOK
	})

	stopLoad()
	load.Wait()
	sentMu.Lock()
	want := sent
	sentMu.Unlock()
	wait.For(t, 30*time.Second, "exact totals", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.last.RequestsTotal == want
	})
	for _, cl := range clients {
		if errs := cl.errors(); len(errs) != 1 {
			t.Errorf("%s: %d Errors over the test, want the one stale notice: %q", cl.name, len(errs), errs)
		}
		cl.mu.Lock()
		if len(cl.faults) > 0 {
			t.Errorf("%s: %v", cl.name, cl.faults)
		}
		cl.mu.Unlock()
	}
	for _, w := range []*clusterWatch{watch, euWatch} {
		w.mu.Lock()
		if len(w.faults) > 0 {
			t.Errorf("contract violations: %v", w.faults)
		}
		w.mu.Unlock()
	}
}
