package aggregator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startAggregator runs an aggregator on nc until the test ends, and waits
// until it is subscribed (the stream is ready only after the subscription).
func startAggregator(t *testing.T, nc *nats.Conn, reg prometheus.Registerer, waitReady bool) *Aggregator {
	t.Helper()
	return startWith(t, Config{NATS: nc, Registerer: reg, Logger: quiet}, waitReady)
}

func startWith(t *testing.T, cfg Config, waitReady bool) *Aggregator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	if waitReady {
		wait.For(t, 10*time.Second, "history stream ready", a.streamReady.Load)
	}
	return a
}

// snapshotWatcher collects live snapshots from core NATS, latest per scope.
type snapshotWatcher struct {
	ch     chan *nats.Msg
	latest map[string]proto.Snapshot
	count  map[string]int
}

func watchSnapshots(t *testing.T, nc *nats.Conn) *snapshotWatcher {
	t.Helper()
	w := &snapshotWatcher{ch: make(chan *nats.Msg, 8192), latest: map[string]proto.Snapshot{}, count: map[string]int{}}
	sub, err := nc.ChanSubscribe(proto.SnapshotSubjectAll, w.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *snapshotWatcher) drain(t *testing.T) {
	for {
		select {
		case m := <-w.ch:
			s, err := proto.DecodeSnapshot(m.Data)
			if err != nil {
				t.Fatalf("snapshot on %s does not decode: %v", m.Subject, err)
			}
			if m.Subject != proto.SnapshotSubject(s.Scope) {
				t.Fatalf("snapshot of %s on subject %s", s.Scope, m.Subject)
			}
			w.latest[s.Scope.String()] = s
			w.count[s.Scope.String()]++
		default:
			return
		}
	}
}

// waitFor drains until scope's latest snapshot satisfies cond.
func (w *snapshotWatcher) waitFor(t *testing.T, scope string, cond func(proto.Snapshot) bool) proto.Snapshot {
	t.Helper()
	wait.For(t, 10*time.Second, "snapshot of "+scope, func() bool {
		w.drain(t)
		s, ok := w.latest[scope]
		return ok && cond(s)
	})
	return w.latest[scope]
}

func publishReport(t *testing.T, nc *nats.Conn, r rp) {
	t.Helper()
	rep := r.report(time.Now())
	data, err := rep.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(proto.ReportSubject(rep.Region, rep.Instance), data); err != nil {
		t.Fatal(err)
	}
}

func TestAggregatorMergesPublishesAndKeepsHistory(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	reg := prometheus.NewRegistry()
	start := time.Now().Truncate(time.Second)
	a := startWith(t, Config{NATS: nc, Registerer: reg, Logger: quiet, InstanceSnapshots: InstanceSnapshotsAll}, true)
	w := watchSnapshots(t, nc)

	// Two gateways in two regions; one duplicate and one bad message.
	publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 100, errs: 5, durMs: 1000, active: 2})
	publishReport(t, nc, rp{inst: "gw-b", region: "us", boot: "b", seq: 1, total: 40, errs: 0, durMs: 400, active: 1})
	publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 2, total: 160, errs: 6, durMs: 1600, active: 3})
	publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 100, errs: 5, durMs: 1000, active: 2})
	if err := nc.Publish(proto.ReportSubject("eu", "gw-x"), []byte(`{"v":1,"instance":`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cluster := w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.RequestsTotal == 200 })
	if cluster.RequestsError != 6 || cluster.RequestsSuccess != 194 || cluster.ActiveConnections != 4 ||
		cluster.Instances != 2 || cluster.DurationCount != 200 || cluster.DurationSumNanos != uint64(2000*time.Millisecond) {
		t.Errorf("cluster = %+v", cluster)
	}
	if cluster.Time.Nanosecond() != 0 || cluster.Time.Location() != time.UTC {
		t.Errorf("snapshot time %v is not a whole UTC second", cluster.Time)
	}
	for scope, total := range map[string]uint64{"region.eu": 160, "region.us": 40, "instance.gw-a": 160, "instance.gw-b": 40} {
		w.waitFor(t, scope, func(s proto.Snapshot) bool { return s.RequestsTotal == total })
	}
	if got := testutil.ToFloat64(a.metrics.decodeErrors); got != 1 {
		t.Errorf("decode errors = %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.metrics.duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	if got := testutil.ToFloat64(a.metrics.received); got != 5 {
		t.Errorf("received = %v, want 5", got)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	if n, _ := testutil.GatherAndCount(reg, "meridian_aggregator_tracked_instances"); n != 1 {
		t.Errorf("tracked_instances series: %d", n)
	}

	// The per-gateway endpoint, over real HTTP.
	srv := httptest.NewServer(a.GatewayHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`meridian_gateway_requests_total{instance="gw-a",region="eu"} 160`,
		`meridian_gateway_request_errors_total{instance="gw-b",region="us"} 0`,
		`meridian_gateway_up{instance="gw-b",region="us"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics/gateways lacks %q:\n%s", want, body)
		}
	}

	// The snapshots landed in the history stream.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var firstRun []proto.Snapshot
	wait.For(t, 10*time.Second, "history of the first run", func() bool {
		firstRun, err = history.Load(ctx, js, proto.ClusterScope(), start, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(firstRun) > 0 && firstRun[len(firstRun)-1].RequestsTotal == 200
	})

	// A new aggregator on the same NATS, after the first shut down: history
	// stays, and the totals carry on from the gateways' cumulative counters.
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Shutdown = %v, want ErrClosed", err)
	}
	startAggregator(t, nc, prometheus.NewRegistry(), true)
	publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 3, total: 170, errs: 6, durMs: 1700})
	publishReport(t, nc, rp{inst: "gw-b", region: "us", boot: "b", seq: 2, total: 45, errs: 1, durMs: 450})
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.RequestsTotal == 215 && s.RequestsError == 7 })

	wait.For(t, 10*time.Second, "history of both runs", func() bool {
		all, err := history.Load(ctx, js, proto.ClusterScope(), start, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) <= len(firstRun) || all[len(all)-1].RequestsTotal != 215 {
			return false
		}
		for i := range firstRun {
			if all[i].Time != firstRun[i].Time || all[i].RequestsTotal != firstRun[i].RequestsTotal {
				t.Fatalf("history of the first run changed at %d: %+v vs %+v", i, all[i], firstRun[i])
			}
		}
		for i := 1; i < len(all); i++ {
			if !all[i].Time.After(all[i-1].Time) {
				t.Fatalf("history holds %v twice or out of order", all[i].Time)
			}
		}
		return true
	})
}

func TestAggregatorWithoutJetStreamKeepsPublishingLive(t *testing.T) {
	t.Parallel()
	n, err := natsnode.New(natsnode.Config{Port: -1, DisableJetStream: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		_ = n.Shutdown(context.Background())
	})
	w := watchSnapshots(t, nc)
	// Without JetStream there is no lease: leadership is decided by hand.
	a := startWith(t, Config{NATS: nc, Logger: quiet, LeaderDisabled: true}, false)
	// Cumulative reports are idempotent: re-send until the subscription sees one.
	wait.For(t, 10*time.Second, "a report to arrive", func() bool {
		publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 9, errs: 1, durMs: 90})
		return testutil.ToFloat64(a.metrics.received) > 0
	})
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.RequestsTotal == 9 })
	wait.For(t, 10*time.Second, "history write errors to be counted", func() bool {
		return testutil.ToFloat64(a.metrics.historyErrors) > 0
	})
	if a.streamReady.Load() {
		t.Error("stream reported ready without JetStream")
	}
}

func TestAggregatorRecreatesDeletedStream(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	// A live subscriber, as edges are: writes without a stream then time out
	// instead of failing with "no responders".
	watchSnapshots(t, nc)
	a := startAggregator(t, nc, nil, true)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, proto.HistoryStream); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the stream to be recreated and written", func() bool {
		s, err := js.Stream(ctx, proto.HistoryStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs > 0 && a.streamReady.Load()
	})
	if testutil.ToFloat64(a.metrics.historyErrors) == 0 {
		t.Error("writes without a stream were not counted as errors")
	}
}

func TestAggregatorFollowerDoesNotPublish(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	reg := prometheus.NewRegistry()
	a := startWith(t, Config{NATS: nc, Registerer: reg, Logger: quiet, LeaderDisabled: true}, true)
	leader := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meridian_aggregator_leader" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no leader gauge")
		return 0
	}
	if !a.Leader() || leader() != 1 {
		t.Fatal("a new aggregator is not the leader")
	}
	ticks := func() float64 { return testutil.ToFloat64(a.metrics.ticks) }
	published := func() float64 { return testutil.ToFloat64(a.metrics.published) }

	if err := a.SetLeader(false); err != nil {
		t.Fatal(err)
	}
	t1 := ticks()
	// Once a tick has started after SetLeader, any tick in flight is done.
	wait.For(t, 5*time.Second, "a tick", func() bool { return ticks() >= t1+1 })
	p := published()
	wait.For(t, 5*time.Second, "two more ticks", func() bool { return ticks() >= t1+3 })
	if published() != p {
		t.Errorf("a follower published %v snapshots", published()-p)
	}
	if leader() != 0 {
		t.Error("leader gauge is not 0 for a follower")
	}
	if err := a.SetLeader(true); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "publishing to resume", func() bool { return published() > p })
}

func TestNewAndShutdown(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without NATS succeeded")
	}
	_, nc := natstest.StartTest(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{NATS: nc, ExportTTL: -time.Second}, "ExportTTL -1s must not be negative"},
		{Config{NATS: nc, StateReplicas: -1}, "StateReplicas -1 must not be negative"},
		{Config{NATS: nc, Merge: MergerConfig{AvgWindow: -time.Second}}, "Merge: AvgWindow -1s must not be negative"},
		{Config{NATS: nc, History: history.StreamConfig{MaxAge: -time.Hour}}, "History: MaxAge -1h0m0s must not be negative"},
		{Config{NATS: nc, Rollups: history.StreamConfig{Replicas: -3}}, "Rollups: Replicas -3 must not be negative"},
		{Config{NATS: nc, Leader: leader.Config{TTL: -time.Second}}, "TTL -1s must not be negative"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
	a, err := New(Config{NATS: nc, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Shutdown before Run, twice: no wait, no error; Run then refuses.
	for range 2 {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Shutdown = %v", err)
	}
	// With the election, leadership is not set by hand.
	if err := a.SetLeader(true); !errors.Is(err, ErrElection) {
		t.Fatalf("SetLeader with the election = %v, want ErrElection", err)
	}
	if a.Leader() {
		t.Fatal("an aggregator that never ran leads")
	}

	// Run stops when its context ends; a second Run meanwhile is refused.
	b, err := New(Config{NATS: nc, Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	wait.For(t, 10*time.Second, "run to start", b.streamReady.Load)
	if err := b.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Registering twice on one registry is an error, not a panic.
	reg := prometheus.NewRegistry()
	if _, err := New(Config{NATS: nc, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{NATS: nc, Registerer: reg}); err == nil {
		t.Fatal("duplicate registration succeeded")
	}
}
