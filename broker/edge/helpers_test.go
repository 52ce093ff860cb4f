//go:build linux

package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) {
	// These tests spend their time waiting on 1 s snapshot cadences, not
	// computing: unless -parallel is given, run more of them at once than
	// the machine has cores.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "6")
	}
	goleak.VerifyTestMain(m)
}

// testEdge is a running Edge on a loopback port with its own NATS node and
// metrics registry.
type testEdge struct {
	*Edge
	t    testing.TB
	nc   *nats.Conn
	prom *prometheus.Registry
	url  string
}

// noTimer is an interval long enough that a connection's first heartbeat
// or ping, drawn at random within it, never falls inside a test.
const noTimer = 50 * 365 * 24 * time.Hour

// startEdge starts an edge; heartbeats and pings are off (noTimer) unless
// cfg sets them, so that tests can count frames exactly.
func startEdge(t testing.TB, cfg Config) *testEdge {
	t.Helper()
	if cfg.NATS == nil {
		_, cfg.NATS = natstest.StartCore(t)
	}
	nc := cfg.NATS
	if cfg.Listen == "" && cfg.Listener == nil {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = noTimer
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = noTimer
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = noTimer // tests that watch one snapshot repeat are not told it is stale
	}
	reg := prometheus.NewRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	te := runEdge(t, e, nc)
	te.prom = reg
	return te
}

// runEdge runs e until the test ends.
func runEdge(t testing.TB, e *Edge, nc *nats.Conn) *testEdge {
	t.Helper()
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after Shutdown")
		}
	})
	wait.For(t, 10*time.Second, "edge serving", e.running.Load)
	return &testEdge{Edge: e, t: t, nc: nc, url: "ws://" + e.Addr().String() + wsPath}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EDGE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// snap builds a valid cluster snapshot.
func snap(at time.Time, total uint64) proto.Snapshot {
	errs := total / 10
	return proto.Snapshot{
		Version:           proto.SnapshotVersion,
		Scope:             proto.ClusterScope(),
		Time:              at.UTC().Truncate(time.Second),
		RequestsTotal:     total,
		RequestsSuccess:   total - errs,
		RequestsError:     errs,
		ActiveConnections: 3,
		AvgResponseTimeMs: 12.5,
		SuccessRate:       proto.SuccessRateOf(total-errs, total),
		DurationSumNanos:  total * 12_500_000,
		DurationCount:     total,
		Instances:         2,
	}
}

// publish sends s on its live subject.
func (te *testEdge) publish(s proto.Snapshot) {
	te.t.Helper()
	data, err := s.Encode()
	if err != nil {
		te.t.Fatalf("encode snapshot: %v", err)
	}
	if err := te.nc.Publish(proto.SnapshotSubject(s.Scope), data); err != nil {
		te.t.Fatalf("publish: %v", err)
	}
	if err := te.nc.Flush(); err != nil {
		te.t.Fatalf("flush: %v", err)
	}
}

// publishWait publishes s and waits until the edge holds it.
func (te *testEdge) publishWait(s proto.Snapshot) {
	te.t.Helper()
	te.publish(s)
	wait.For(te.t, 10*time.Second, "snapshot applied", func() bool {
		got, ok := te.latest(s.Scope)
		return ok && got.Time.Equal(s.Time)
	})
}

// client is a WebSocket test client that sees every frame (no automatic
// control-frame handling), built on gobwas/ws.
type client struct {
	t    testing.TB
	conn net.Conn
	r    io.Reader
}

func dial(t testing.TB, url string) *client {
	t.Helper()
	return dialWith(t, ws.Dialer{}, url)
}

func dialWith(t testing.TB, d ws.Dialer, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	r := io.Reader(conn)
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	return &client{t: t, conn: conn, r: r}
}

// frame reads one frame, waiting at most d.
func (c *client) frame(d time.Duration) (ws.Header, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		c.t.Errorf("server frame is masked")
	}
	return h, p, nil
}

// event reads the next text message and decodes it; control frames other
// than close are skipped.
func (c *client) event(d time.Duration) (proto.Event, map[string]json.RawMessage) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		h, p, err := c.frame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("read event: %v", err)
		}
		switch h.OpCode {
		case ws.OpPing, ws.OpPong:
			continue
		case ws.OpText:
		default:
			c.t.Fatalf("read event: got opcode %v payload %q", h.OpCode, p)
		}
		ev, err := proto.DecodeEvent(p)
		if err != nil {
			c.t.Fatalf("decode event %s: %v", p, err)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(p, &raw); err != nil {
			c.t.Fatalf("unmarshal event %s: %v", p, err)
		}
		return ev, raw
	}
}

// eventOfType reads events until one of type typ (others fail the test).
func (c *client) expectEvent(typ string, d time.Duration) (proto.Event, map[string]json.RawMessage) {
	c.t.Helper()
	ev, raw := c.event(d)
	if ev.Type != typ {
		c.t.Fatalf("got %s event %v, want %s", ev.Type, raw, typ)
	}
	return ev, raw
}

// expectSilence asserts that no frame arrives within d.
func (c *client) expectSilence(d time.Duration) {
	c.t.Helper()
	h, p, err := c.frame(d)
	if err == nil {
		c.t.Fatalf("got %v frame %q, want nothing for %s", h.OpCode, p, d)
	}
	if !isTimeout(err) {
		c.t.Fatalf("want silence, got error %v", err)
	}
}

// expectClose reads until a close frame and returns its code and reason.
func (c *client) expectClose(d time.Duration) (ws.StatusCode, string) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		h, p, err := c.frame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("want a close frame, got error %v", err)
		}
		if h.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(p)
			return code, reason
		}
	}
}

// expectEOF asserts the server closed the TCP connection.
func (c *client) expectEOF(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, _, err := c.frame(time.Until(deadline))
		if err == nil {
			continue
		}
		if isTimeout(err) {
			c.t.Fatalf("connection still open after %s", d)
		}
		return // EOF or reset
	}
}

func (c *client) sendText(s string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.conn, []byte(s)); err != nil {
		c.t.Fatalf("send text: %v", err)
	}
}

func (c *client) sendFrame(op ws.OpCode, p []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, op, p); err != nil {
		c.t.Fatalf("send %v: %v", op, err)
	}
}

// sendRaw writes bytes as they are.
func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("send raw: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// keys lists an event's JSON fields.
func keys(raw map[string]json.RawMessage) string {
	var ks []string
	for _, m := range append([]string{"type", "timestamp"}, proto.MetricNames()...) {
		if _, ok := raw[m]; ok {
			ks = append(ks, m)
		}
	}
	if len(ks) != len(raw) {
		ks = append(ks, "+unexpected")
	}
	return strings.Join(ks, ",")
}

// rawFrame encodes a client frame with full control over its header;
// masked frames are masked with a fixed key.
func rawFrame(h ws.Header, payload []byte) []byte {
	var b strings.Builder
	if h.Masked {
		h.Mask = [4]byte{1, 2, 3, 4}
	}
	h.Length = int64(len(payload))
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := append([]byte(nil), payload...)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	b.Write(p)
	return []byte(b.String())
}

// connOf returns the edge's only connection.
func (te *testEdge) onlyConn() *conn {
	te.t.Helper()
	all := te.Edge.reg.all()
	if len(all) != 1 {
		te.t.Fatalf("edge has %d connections, want 1", len(all))
	}
	return all[0]
}

// rawDial opens a plain TCP connection for hand-written requests.
func rawDial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// readHTTPResponse reads a response head (and a body for non-101) from a
// rawDial client.
func (c *client) readHTTPResponse(want int) (*http.Response, string) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r.(*bufio.Reader), nil)
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	var body string
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	if resp.StatusCode != want {
		c.t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, want)
	}
	return resp, body
}

// upgradeRequest is a minimal valid WebSocket upgrade request.
func upgradeRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}
