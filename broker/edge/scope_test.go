//go:build linux

package edge

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// jsEdge is a test edge on a NATS node with JetStream, the history stream
// and a rollup stream like the aggregator's.
type jsEdge struct {
	*testEdge
	js jetstream.JetStream
}

// startJS starts NATS with JetStream and creates both streams; the edge is
// started by jsEdge.start, so that tests can store history first.
func startJS(t *testing.T) (jetstream.JetStream, func(Config) *jsEdge) {
	t.Helper()
	_, nc := natstest.StartTest(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := history.EnsureStream(ctx, js, history.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := history.EnsureRollupStream(ctx, js, history.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return js, func(cfg Config) *jsEdge {
		t.Helper()
		cfg.NATS = nc
		te := startEdge(t, cfg)
		wait.For(t, 10*time.Second, "cluster history loaded", te.hist.cluster.loaded.Load)
		return &jsEdge{testEdge: te, js: js}
	}
}

// store publishes snapshots into the history stream (subject by scope) and
// waits for each to be stored.
func store(t *testing.T, js jetstream.JetStream, snaps ...proto.Snapshot) {
	t.Helper()
	storeOn(t, js, proto.SnapshotSubject, snaps...)
}

// storeRollups publishes rollups into the rollup stream.
func storeRollups(t *testing.T, js jetstream.JetStream, snaps ...proto.Snapshot) {
	t.Helper()
	storeOn(t, js, proto.RollupSubject, snaps...)
}

func storeOn(t *testing.T, js jetstream.JetStream, subject func(proto.Scope) string, snaps ...proto.Snapshot) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range snaps {
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishAsync(subject(s.Scope), data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing to JetStream timed out")
	}
}

// scoped returns s for another scope.
func scoped(s proto.Snapshot, scope proto.Scope) proto.Snapshot {
	s.Scope = scope
	return s
}

var (
	regionEU = proto.RegionScope("eu")
	instEU1  = proto.InstanceScope("gw-eu-1")
)

// publishScopes publishes one snapshot per scope at t, with
// requests_total 1000 (cluster), 400 (region eu) and 150 (gw-eu-1): the
// cluster's and the region's live, the instance's into the history stream,
// where the edge finds it when a client follows it (it follows no instance
// before).
func (te *jsEdge) publishScopes(t time.Time) {
	te.t.Helper()
	te.publishWait(snap(t, 1000))
	te.publishWait(scoped(snap(t, 400), regionEU))
	store(te.t.(*testing.T), te.js, scoped(snap(t, 150), instEU1))
}

// nextSnapshotTotal skips to the next Snapshot (ignoring history frames)
// and returns its requests_total.
func (c *client) nextSnapshot(d time.Duration) proto.Event {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev, raw := c.event(time.Until(deadline))
		switch ev.Type {
		case proto.EventSnapshot:
			return ev
		case proto.EventError:
			c.t.Fatalf("unexpected Error %v", raw)
		}
	}
}

func TestScopeBySubscription(t *testing.T) {
	t.Parallel()
	_, start := startJS(t)
	te := start(Config{})
	te.publishScopes(time.Now())

	c := dial(t, te.url)
	if ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second); ev.Values["requests_total"] != 1000 {
		t.Fatalf("first snapshot %v, want the cluster's", ev.Values)
	}
	tests := []struct {
		sub  string
		want float64
	}{
		{`{"region":"eu","metrics":["requests_total"]}`, 400},
		{`{"instance":"gw-eu-1"}`, 150},
		{`{"region":null,"instance":null}`, 1000}, // back to the cluster
		{`{"instance":"gw-eu-1","interval_seconds":1}`, 150},
	}
	for _, tt := range tests {
		c.sendText(tt.sub)
		// A tick may have been under way when the message arrived.
		ev := c.nextSnapshot(2 * time.Second)
		if ev.Values["requests_total"] != tt.want {
			ev = c.nextSnapshot(2 * time.Second)
		}
		if got := ev.Values["requests_total"]; got != tt.want {
			t.Fatalf("%s: requests_total %v, want %v", tt.sub, got, tt.want)
		}
	}

	// An unknown scope: Error naming it and listing the known ones; the
	// previous subscription (gw-eu-1, all metrics) stays.
	c.sendText(`{"region":"mars","metrics":["requests_error"]}`)
	var msg string
	for msg == "" {
		ev, raw := c.event(3 * time.Second)
		switch ev.Type {
		case proto.EventError:
			msg = ev.Message
		case proto.EventSnapshot:
			if ev.Values["requests_total"] != 150 || keys(raw) != allKeys {
				t.Fatalf("snapshot %v while the unknown scope was looked up, want gw-eu-1's, all metrics", raw)
			}
		default:
			t.Fatalf("unexpected %v", raw)
		}
	}
	want := "unknown scope region.mars: no snapshot of it was seen live or is kept in history; known scopes: cluster, region.eu, instance.gw-eu-1"
	if msg != want {
		t.Errorf("error %q,\nwant %q", msg, want)
	}
	for range 2 {
		ev, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
		if ev.Values["requests_total"] != 150 || keys(raw) != allKeys {
			t.Fatalf("after the unknown scope: %v, want gw-eu-1's snapshot with all metrics", raw)
		}
	}
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeUnknownScope]); got != 1 {
		t.Errorf("errors{unknown_scope} = %v, want 1", got)
	}
}

func TestScopeByQueryParameter(t *testing.T) {
	t.Parallel()
	_, start := startJS(t)
	te := start(Config{})
	te.publishScopes(time.Now())
	tests := []struct {
		query string
		want  float64
	}{
		{"", 1000},
		{"?region=eu", 400},
		{"?instance=gw-eu-1", 150},
		{"?region=eu&x=1", 400}, // other parameters are ignored
	}
	for _, tt := range tests {
		c := dial(t, te.url+tt.query)
		for i := range 2 { // the first snapshot and the next tick
			ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second)
			if got := ev.Values["requests_total"]; got != tt.want {
				t.Errorf("%q snapshot %d: requests_total %v, want %v", tt.query, i, got, tt.want)
			}
		}
		// A subscription message without a scope field means the cluster.
		c.sendText(`{"metrics":["requests_total"]}`)
		ev := c.nextSnapshot(2 * time.Second)
		if ev.Values["requests_total"] != 1000 {
			ev = c.nextSnapshot(2 * time.Second)
		}
		if got := ev.Values["requests_total"]; got != 1000 {
			t.Errorf("%q then a scope-less subscription: %v, want the cluster's", tt.query, got)
		}
	}
}

// A scope found in history starts with its last stored snapshot, and
// live ones take over once they arrive.
func TestScopeFromHistoryThenLive(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	now := time.Now()
	store(t, js, scoped(snap(now.Add(-time.Hour), 7), regionEU)) // before the edge: not seen live
	te := start(Config{})
	te.publishWait(snap(now, 1000))
	c := dial(t, te.url+"?region=eu")
	if ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second); ev.Values["requests_total"] != 7 {
		t.Fatalf("first snapshot %v, want the one from history", ev.Values)
	}
	if ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second); ev.Values["requests_total"] != 7 {
		t.Fatalf("next snapshot %v, want the one from history again", ev.Values)
	}
	te.publishWait(scoped(snap(now, 400), regionEU))
	if ev := c.nextSnapshot(2 * time.Second); ev.Values["requests_total"] != 400 {
		t.Fatalf("next snapshot %v, want the live one", ev.Values)
	}
}

// Scopes known only from history (departed instances) are served: their
// last snapshot is the one repeated, and an unknown one is refused.
func TestScopeFromHistoryOnly(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	now := time.Now().UTC().Truncate(time.Second)
	old := proto.InstanceScope("gw-old")
	ancient := proto.InstanceScope("gw-ancient")
	for i := range 5 {
		store(t, js, scoped(snap(now.Add(time.Duration(i-7200)*time.Second), uint64(70+i)), old))
	}
	roll := scoped(snap(now.Add(-72*time.Hour).Truncate(time.Minute), 33), ancient)
	storeRollups(t, js, roll)
	te := start(Config{})
	te.publishWait(snap(now, 1000))

	// gw-old is first named by a subscription (looked up by a history
	// worker), gw-ancient by a query parameter (looked up in the handshake).
	bySub := func(name string, want float64) {
		c := dial(t, te.url)
		c.expectEvent(proto.EventSnapshot, 2*time.Second)
		c.sendText(`{"instance":"` + name + `","metrics":["requests_total"]}`)
		if ev := c.nextSnapshot(3 * time.Second); ev.Values["requests_total"] != want {
			if ev = c.nextSnapshot(3 * time.Second); ev.Values["requests_total"] != want {
				t.Errorf("%s by subscription: %v, want %v", name, ev.Values, want)
			}
		}
	}
	byQuery := func(name string, want float64) {
		c := dial(t, te.url+"?instance="+name)
		if ev, _ := c.expectEvent(proto.EventSnapshot, 3*time.Second); ev.Values["requests_total"] != want {
			t.Errorf("%s by query: first snapshot %v, want the last one in history", name, ev.Values)
		}
	}
	bySub(old.Name, 74)
	byQuery(old.Name, 74)
	byQuery(ancient.Name, 33)
	bySub(ancient.Name, 33)
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	c.sendText(`{"instance":"gw-never"}`)
	// The edge first asks the aggregators for the instance (up to
	// probeWait), while the cluster subscription goes on.
	ev, raw := c.event(probeWait + 3*time.Second)
	for ev.Type == proto.EventSnapshot {
		ev, raw = c.event(probeWait + 3*time.Second)
	}
	if ev.Type != proto.EventError {
		t.Fatalf("got %v, want an Error", raw)
	}
	if !strings.Contains(ev.Message, "unknown scope instance.gw-never") ||
		!strings.HasSuffix(ev.Message, "known scopes: cluster, instance.gw-ancient, instance.gw-old") {
		t.Errorf("error %q", ev.Message)
	}
}

func TestScopeAndHistoryMetrics(t *testing.T) {
	t.Parallel()
	_, start := startJS(t)
	te := start(Config{Namespace: "test"})
	now := time.Now().UTC().Truncate(time.Second)
	te.publishScopes(now)

	cluster := dial(t, te.url)
	cluster.expectEvent(proto.EventSnapshot, 2*time.Second)
	eu := dial(t, te.url+"?region=eu")
	eu.expectEvent(proto.EventSnapshot, 2*time.Second)
	inst := dial(t, te.url)
	inst.expectEvent(proto.EventSnapshot, 2*time.Second)
	inst.sendText(`{"instance":"gw-eu-1","metrics":["requests_total"],"strict_metrics":true,"include_history":true,"since":"` + rfc3339(now.Add(-10*time.Second)) + `"}`)
	historyEvents(t, inst, "", proto.RequestsTotal)
	expectReplay(t, inst, []proto.Snapshot{scoped(snap(now, 150), instEU1)}, "type,timestamp,requests_total")

	problems, err := testutil.GatherAndLint(te.prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP test_edge_scopes_known Scopes whose newest snapshot the edge holds (seen live, or found in history by a subscription).
# TYPE test_edge_scopes_known gauge
test_edge_scopes_known 3
# HELP test_edge_scopes_served Scopes at least one connection is subscribed to, by kind.
# TYPE test_edge_scopes_served gauge
test_edge_scopes_served{kind="cluster"} 1
test_edge_scopes_served{kind="instance"} 1
test_edge_scopes_served{kind="region"} 1
# HELP test_edge_history_scopes Scopes whose history window is held in memory.
# TYPE test_edge_history_scopes gauge
test_edge_history_scopes 2
# HELP test_edge_history_queue_connections Connections waiting for a history worker.
# TYPE test_edge_history_queue_connections gauge
test_edge_history_queue_connections 0
# HELP test_edge_history_requests_total History requests (include_history or since), by result: served, rate_limited, failed (a JetStream read failed).
# TYPE test_edge_history_requests_total counter
test_edge_history_requests_total{result="failed"} 0
test_edge_history_requests_total{result="rate_limited"} 0
test_edge_history_requests_total{result="served"} 1
# HELP test_edge_replayed_snapshots_total Snapshots sent by since replays.
# TYPE test_edge_replayed_snapshots_total counter
test_edge_replayed_snapshots_total 1
`
	names := []string{"test_edge_scopes_known", "test_edge_scopes_served", "test_edge_history_scopes",
		"test_edge_history_queue_connections", "test_edge_history_requests_total", "test_edge_replayed_snapshots_total"}
	if err := testutil.GatherAndCompare(te.prom, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Gauges follow the state: the region's only client leaves.
	eu.conn.Close()
	wait.For(t, 10*time.Second, "region no longer served", func() bool {
		_, served := te.scopes.census()
		return served == [3]int{1, 0, 1}
	})
}

// When JetStream cannot be reached: a scope not held live is refused with
// "could not be searched" (Error, 503), and a history request that needs a
// stream fails with an Error while its subscription still applies.
func TestHistoryUnavailable(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	te := startEdge(t, Config{NATS: nc, HistoryWindow: time.Minute, HistoryTimeout: 300 * time.Millisecond, HandshakeTimeout: time.Second})
	wait.For(t, 10*time.Second, "cluster history loaded", te.hist.cluster.loaded.Load)
	te.publishWait(snap(time.Now(), 9))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.sendText(`{"region":"mars"}`)
	ev, _ := c.expectEvent(proto.EventError, 3*time.Second)
	if !strings.HasPrefix(ev.Message, "scope region.mars was not seen live and its history could not be searched (") ||
		!strings.HasSuffix(ev.Message, "); try again later") {
		t.Errorf("error %q", ev.Message)
	}
	c.sendText(`{"metrics":["requests_total"],"strict_metrics":true,"include_history":true,"history_seconds":7200}`)
	ev, _ = c.expectEvent(proto.EventError, 3*time.Second)
	if !strings.HasPrefix(ev.Message, "history unavailable: read rollups of cluster: ") ||
		!strings.HasSuffix(ev.Message, "; the subscription was applied without its history") {
		t.Errorf("error %q", ev.Message)
	}
	_, raw := c.expectEvent(proto.EventSnapshot, 3*time.Second)
	if got := keys(raw); got != "type,timestamp,requests_total" {
		t.Errorf("after the failed history: fields %s, want the new subscription's", got)
	}
	if got := testutil.ToFloat64(te.m.historyFailed); got != 1 {
		t.Errorf("history_requests{failed} = %v, want 1", got)
	}

	raw2 := rawDial(t, te.Addr().String())
	raw2.sendRaw([]byte(upgradeRequest(wsPath + "?region=mars")))
	if _, body := raw2.readHTTPResponse(http.StatusServiceUnavailable); !strings.Contains(body, "could not be searched") {
		t.Errorf("body %q", body)
	}
}
