package naiveedge

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNATS runs an in-process NATS server without JetStream.
func startNATS(t testing.TB) *nats.Conn {
	t.Helper()
	n, err := natsnode.New(natsnode.Config{DontListen: true, DisableJetStream: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		_ = n.Shutdown(context.Background())
	})
	return nc
}

type testServer struct {
	*Server
	t   testing.TB
	nc  *nats.Conn
	url string
}

// startServer runs a Server until the test ends and publishes a first
// snapshot, waiting until the server holds it.
func startServer(t testing.TB) *testServer {
	t.Helper()
	nc := startNATS(t)
	s, err := New(Config{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	ts := &testServer{Server: s, t: t, nc: nc, url: "ws://" + s.Addr().String() + Path}
	ts.publish(snapshot(time.Now().Add(-time.Second), 1000))
	wait.For(t, 10*time.Second, "first snapshot", s.HasSnapshot)
	return ts
}

func snapshot(at time.Time, total uint64) proto.Snapshot {
	return proto.Snapshot{
		Version: proto.SnapshotVersion, Scope: proto.ClusterScope(), Time: at.UTC().Truncate(time.Second),
		RequestsTotal: total, RequestsSuccess: total - 10, RequestsError: 10, ActiveConnections: 4,
		AvgResponseTimeMs: 12.5, SuccessRate: proto.SuccessRateOf(total-10, total), DurationCount: total, Instances: 2,
	}
}

func (ts *testServer) publish(s proto.Snapshot) {
	ts.t.Helper()
	data, err := s.Encode()
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.nc.Publish(proto.SnapshotSubject(s.Scope), data); err != nil {
		ts.t.Fatal(err)
	}
}

func dial(t testing.TB, url string) *wsclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := wsclient.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// next reads one message within d and returns its JSON fields.
func next(t testing.TB, c *wsclient.Client, d time.Duration) (map[string]json.RawMessage, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	data, err := c.NextRaw(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	at := time.Now()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return fields, at
}

func keys(fields map[string]json.RawMessage) string {
	var ks []string
	for _, k := range append([]string{"type", "timestamp", "message"}, proto.MetricNames()...) {
		if _, ok := fields[k]; ok {
			ks = append(ks, k)
		}
	}
	return strings.Join(ks, ",")
}

func TestProtocol(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	c := dial(t, ts.url)

	first, t0 := next(t, c, 2*time.Second)
	var guide []string
	for _, m := range proto.GuideMetrics.Metrics() {
		guide = append(guide, m.String())
	}
	if got, want := keys(first), "type,timestamp,"+strings.Join(guide, ","); got != want {
		t.Fatalf("first message has %s, want %s", got, want)
	}
	if string(first["type"]) != `"Snapshot"` || string(first["requests_total"]) != "1000" {
		t.Fatalf("first message %v", first)
	}

	// An invalid subscription gets an Error event and changes nothing.
	if err := c.WriteText(context.Background(), []byte(`{"interval_seconds":0}`)); err != nil {
		t.Fatal(err)
	}
	errEv, _ := next(t, c, 2*time.Second)
	if string(errEv["type"]) != `"Error"` || !strings.Contains(string(errEv["message"]), "interval_seconds") {
		t.Fatalf("invalid subscription answered with %v", errEv)
	}

	// A valid strict one narrows the metrics and keeps the phase: the next
	// Snapshot is due at t0 + 2 s.
	err := c.Subscribe(context.Background(), map[string]any{"metrics": []string{"requests_total", "success_rate"}, "interval_seconds": 2, "strict_metrics": true})
	if err != nil {
		t.Fatal(err)
	}
	ts.publish(snapshot(time.Now(), 2000))
	got, at := next(t, c, 4*time.Second)
	if keys(got) != "type,timestamp,requests_total,success_rate" {
		t.Fatalf("snapshot after the subscription has %s", keys(got))
	}
	if string(got["requests_total"]) != "2000" {
		t.Errorf("periodic snapshot carries requests_total %s, want the newest (2000)", got["requests_total"])
	}
	if lag := at.Sub(t0.Add(2 * time.Second)); lag < -50*time.Millisecond || lag > 500*time.Millisecond {
		t.Errorf("second snapshot %s after t0 + 2s, want on the phase", lag)
	}
	// The counter moves once the write returned, which may be after the
	// client read the frame.
	wait.For(t, 10*time.Second, "2 deliveries counted", func() bool { return ts.Stats().Deliveries == 2 })
	if st := ts.Stats(); st.Connections != 1 || st.WriteErrors != 0 || st.SkippedTicks != 0 {
		t.Errorf("stats %+v, want 1 connection and no errors", st)
	}
}

func TestShutdownClosesConnectionsAndJoins(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	s, err := New(Config{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()
	url := "ws://" + s.Addr().String() + Path
	clients := []*wsclient.Client{dial(t, url), dial(t, url)}
	wait.For(t, 10*time.Second, "two connections", func() bool { return s.Stats().Connections == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if err := s.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("run after shutdown: %v, want ErrClosed", err)
	}
	for _, c := range clients {
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := c.NextRaw(rctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("client read after shutdown: %v, want the connection closed", err)
		}
		rcancel()
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Errorf("listener still accepts after shutdown")
	}
}

func TestNewRequiresNATS(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "NATS") {
		t.Fatalf("New without NATS: %v", err)
	}
}
