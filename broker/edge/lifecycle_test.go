//go:build linux

package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestShutdownSends1001AndWaitsForClients(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))
	// Clients that behave like libraries: they answer a close frame.
	type result struct {
		code   ws.StatusCode
		reason string
	}
	results := make(chan result, 3)
	for range 3 {
		c := dial(t, te.url)
		go func() {
			for {
				_, _, err := wsutil.ReadServerData(c.conn)
				var ce wsutil.ClosedError
				if errors.As(err, &ce) {
					results <- result{ce.Code, ce.Reason}
					return
				}
				if err != nil {
					results <- result{0, err.Error()}
					return
				}
			}
		}()
	}
	wait.For(t, 10*time.Second, "3 connections", func() bool { return te.Edge.reg.len() == 3 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := te.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %s though every client answered", d)
	}
	for range 3 {
		r := <-results
		if r.code != ws.StatusGoingAway || r.reason != "server shutting down" {
			t.Errorf("client saw close %d %q, want 1001 server shutting down", r.code, r.reason)
		}
	}
	if got := testutil.ToFloat64(te.m.closedByReason[reasonShutdown]); got != 3 {
		t.Errorf("closed{shutdown} = %v, want 3", got)
	}
	if _, err := net.Dial("tcp", te.Addr().String()); err == nil {
		t.Errorf("still accepting after shutdown")
	}
}

func TestShutdownBoundedByContext(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	c := dial(t, te.url) // never answers the close frame
	wait.For(t, 10*time.Second, "registered", func() bool { return te.Edge.reg.len() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = te.Shutdown(ctx)                                       // may report the deadline; Run finishes regardless
	if err := te.life.Wait(context.Background()); err != nil { // Run returns regardless
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %s with a 300ms context", d)
	}
	code, _ := c.expectClose(time.Second)
	if code != ws.StatusGoingAway {
		t.Errorf("close code %d, want 1001", code)
	}
	c.expectEOF(time.Second)
	if err := te.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := te.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Shutdown = %v, want ErrClosed", err)
	}
}

func TestRunTwiceAndShutdownWithoutRun(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	if err := te.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}

	_, nc := natstest.StartCore(t)
	e, err := New(Config{NATS: nc, Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.Addr().String()
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown without run: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Errorf("listener still open after Shutdown without Run")
	}
	if _, err := New(Config{}); err == nil {
		t.Errorf("New without NATS succeeded")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartCore(t)
	e, err := New(Config{NATS: nc, Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	wait.For(t, 10*time.Second, "serving", e.running.Load)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestHTTPOnTheSamePort(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "custom metrics") })
	te := startEdge(t, Config{HTTP: mux})
	base := "http://" + te.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path string
		code int
		body string
	}{
		{
			path: "/healthz",
			code: 200,
			body: "ok",
		},
		{
			path: "/metrics",
			code: 200,
			body: "custom metrics",
		},
		{
			path: "/nope",
			code: 404,
			body: "404 page not found",
		},
		{
			path: "/ws/metrics?x=1", // GET without upgrade headers
			code: 400,
		},
	}
	for _, tt := range tests {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, code, body, tt.code, tt.body)
		}
	}
	resp, err := http.Post(base+"/metrics", "text/plain", strings.NewReader("body"))
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("POST /metrics = %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Keep-alive: an HTTP request, then a WebSocket upgrade on the same
	// connection (served through the HTTP server).
	te.publishWait(snap(time.Now(), 9))
	c := rawDial(t, te.Addr().String())
	c.sendRaw([]byte("GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n"))
	c.readHTTPResponse(200)
	c.sendRaw([]byte(upgradeRequest("/ws/metrics")))
	c.readHTTPResponse(101)
	ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if ev.Values["requests_total"] != 9 {
		t.Errorf("snapshot over reused connection = %+v", ev)
	}
	c.sendFrame(ws.OpPing, []byte("k"))
	if h, p, err := c.frame(time.Second); err != nil || h.OpCode != ws.OpPong || string(p) != "k" {
		t.Errorf("pong over reused connection: %v %q %v", h.OpCode, p, err)
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64
	te := startEdge(t, Config{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + te.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := readyz(); code != 503 || body != "no cluster snapshot received yet" {
		t.Errorf("before data: %d %q", code, body)
	}
	// A region snapshot does not make the edge ready: it serves the cluster.
	rs := snap(time.Now(), 1)
	rs.Scope = proto.RegionScope("eu")
	te.publishWait(rs)
	if ready(te.Edge) {
		t.Errorf("ready with only a region snapshot")
	}
	te.publishWait(snap(time.Now(), 1))
	if code, body := readyz(); code != 200 || body != "ready" || !ready(te.Edge) {
		t.Errorf("with data: %d %q", code, body)
	}
	skew.Store(int64(6 * time.Second))
	if code, body := readyz(); code != 503 || !strings.HasPrefix(body, "last cluster snapshot arrived 6") {
		t.Errorf("stale: %d %q", code, body)
	}
	if got := testutil.ToFloat64(te.m.snapshotsAccepted); got != 2 {
		t.Errorf("snapshots accepted = %v, want 2", got)
	}
	// An older snapshot of a scope already held is not applied.
	te.publish(snap(time.Now().Add(-time.Hour), 1))
	wait.For(t, 10*time.Second, "stale counted", func() bool { return testutil.ToFloat64(te.m.snapshotsStale) == 1 })
	if err := te.nc.Publish(proto.SnapshotSubject(proto.ClusterScope()), []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "invalid counted", func() bool { return testutil.ToFloat64(te.m.snapshotsInvalid) == 1 })
}

func TestMetricsLintAndState(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Namespace: "test"})
	te.publishWait(snap(time.Now(), 1))
	a, b := dial(t, te.url), dial(t, te.url)
	a.expectEvent(proto.EventSnapshot, 2*time.Second)
	b.expectEvent(proto.EventSnapshot, 2*time.Second)
	b.sendText(`{"interval_seconds":7}`)
	wait.For(t, 10*time.Second, "subscription applied", func() bool {
		n := 0
		te.Edge.reg.each(func(c *conn) {
			if c.interval.Load() == 7 {
				n++
			}
		})
		return n == 1
	})
	problems, err := testutil.GatherAndLint(te.prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP test_edge_connections Open WebSocket connections.
# TYPE test_edge_connections gauge
test_edge_connections 2
# HELP test_edge_subscriptions Open WebSocket connections by subscribed interval.
# TYPE test_edge_subscriptions gauge
test_edge_subscriptions{interval_seconds="1"} 1
test_edge_subscriptions{interval_seconds="7"} 1
# HELP test_edge_connections_opened_total WebSocket connections upgraded.
# TYPE test_edge_connections_opened_total counter
test_edge_connections_opened_total 2
`
	if err := testutil.GatherAndCompare(te.prom, strings.NewReader(want),
		"test_edge_connections", "test_edge_subscriptions", "test_edge_connections_opened_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(te.m.msgsSent); got < 2 {
		t.Errorf("messages sent = %v, want at least the 2 first snapshots", got)
	}
	if got := testutil.ToFloat64(te.m.msgsRecv); got != 1 {
		t.Errorf("messages received = %v, want 1", got)
	}
	a.conn.Close()
	wait.For(t, 10*time.Second, "gauge follows a vanished client", func() bool {
		return connectionsGauge(te) == 1
	})
}

// connectionsGauge reads the connections gauge through a scrape.
func connectionsGauge(te *testEdge) float64 {
	mfs, err := te.prom.Gather()
	if err != nil {
		te.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == te.cfg.Namespace+"_edge_connections" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
