package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// runWatch runs `meridian watch args...` in this process. ctx bounds it: a
// watch that retried what it should refuse would run until ctx ends and
// exit 0, failing the caller's exit-code check.
func runWatch(t *testing.T, timeout time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"meridian", "watch"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestWatchRefusesWhatIsNotAWebSocketURL(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"http scheme", []string{"http://127.0.0.1:5900/ws/metrics"}, `"http://127.0.0.1:5900/ws/metrics" is not a WebSocket URL: the scheme must be ws:// or wss://`},
		{"no scheme", []string{"127.0.0.1:5900/ws/metrics"}, "is not a"},
		{"malformed", []string{"ws://[::1/ws/metrics"}, `"ws://[::1/ws/metrics" is not a URL`},
		{"no host", []string{"ws:///ws/metrics"}, "names no host"},
		{"flag after the URL", []string{"ws://127.0.0.1:1/ws/metrics", "--count", "3"}, "--count after the URLs: write flags before the URLs"},
		{"flag after the second URL", []string{"ws://127.0.0.1:1/ws/metrics", "ws://127.0.0.1:2/ws/metrics", "--raw"}, "--raw after the URLs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runWatch(t, 30*time.Second, append([]string{"--reconnect-timeout", "1h"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
			if strings.Contains(stderr, "attempt") {
				t.Errorf("tried to connect: %q", stderr)
			}
		})
	}
}

// startEdge runs a real edge (with NATS, no aggregator: no scope is known
// but the cluster) and returns it, its /ws/metrics URL and the NATS
// connection to publish snapshots on.
func startEdge(t *testing.T) (*edge.Edge, string, *nats.Conn) {
	t.Helper()
	_, nc := natstest.StartTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{Listener: ln, NATS: nc, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil && !errors.Is(err, edge.ErrClosed) {
			t.Errorf("edge: Run: %v", err)
		}
	})
	return e, "ws://" + e.Addr().String() + "/ws/metrics", nc
}

// A refusal that retrying cannot fix ends watch at once with the edge's
// reason, however long it would otherwise retry.
func TestWatchEndsAtOnceOnRefusal(t *testing.T) {
	_, url, _ := startEdge(t)
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{"bad query parameter", "?region=e.u", "the server refused the WebSocket upgrade with 400 Bad Request: bad query parameter: "},
		{"both scopes", "?region=eu&instance=gw-1", "400 Bad Request: bad query parameter: "},
		{"unknown scope", "?region=mars", "404 Not Found: unknown scope region.mars"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runWatch(t, 30*time.Second, "--reconnect-timeout", "1h", url+tt.query)
			if code != 1 || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, url+tt.query) {
				t.Errorf("exit %d, stderr %q; want 1 and %q with the URL", code, stderr, tt.want)
			}
			if strings.Contains(stderr, "attempt") {
				t.Errorf("retried a refusal that cannot change: %q", stderr)
			}
		})
	}
}

// While nothing answers, every attempt says so; then watch gives up with
// exit 1.
func TestWatchSaysWhenRetrying(t *testing.T) {
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // from now on refused
		return "ws://" + ln.Addr().String() + "/ws/metrics"
	}
	one, two := refused(), refused()
	code, _, stderr := runWatch(t, 60*time.Second, "--reconnect-timeout", "1s", one, two)
	if code != 1 || !strings.Contains(stderr, "cannot connect to "+one+" or "+two) {
		t.Fatalf("exit %d, stderr %q; want 1 and cannot connect", code, stderr)
	}
	attempt := regexp.MustCompile(`^attempt (\d+): dial (\S+): .*connection refused; (trying (\S+) next|retrying in \d+(\.\d+)?m?s) \(giving up in `)
	var next, retry int
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		m := attempt.FindStringSubmatch(l)
		switch {
		case m == nil:
			if !strings.HasPrefix(l, "meridian: cannot connect") {
				t.Errorf("unexpected line %q", l)
			}
		case m[2] == one && m[4] == two:
			next++
		case m[2] == two && strings.HasPrefix(m[3], "retrying"):
			retry++
		default:
			t.Errorf("attempt line %q: want %s then the next URL, %s then a retry", l, one, two)
		}
	}
	if next < 2 || retry < 2 {
		t.Errorf("%d lines moving to the next URL and %d retries in 1 s, want one per attempt (at least 2 each):\n%s", next, retry, stderr)
	}
}

// Snapshots carry the guide's six whatever the subscription names; watch
// prints what --metrics names, and every metric without it.
func TestWatchPrintsTheNamedMetrics(t *testing.T) {
	e, url, nc := startEdge(t)
	s := proto.Snapshot{Version: proto.SnapshotVersion, Time: time.Now().UTC().Truncate(time.Second),
		RequestsTotal: 100, RequestsSuccess: 90, RequestsError: 10, ActiveConnections: 2,
		AvgResponseTimeMs: 12.5, SuccessRate: 90}
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Published until the edge has it: it may not have subscribed yet.
	wait.For(t, 20*time.Second, "the edge holding the snapshot", func() bool {
		if _, ok := e.Ready(); ok {
			return true
		}
		if err := nc.Publish(proto.SnapshotSubject(proto.ClusterScope()), data); err != nil {
			t.Fatal(err)
		}
		return false
	})
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--count", "2", url}, "total=100  success=90  error=10  active_connections=2  avg=12.50ms  success_rate=90.00%"},
		{[]string{"--count", "2", "--metrics", "requests_total,response_time_avg", url}, "total=100  avg=12.50ms"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runWatch(t, 30*time.Second, tt.args...)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if code != 0 || stderr != "" || len(lines) != 2 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want two lines", tt.args, code, stdout, stderr)
		}
		for _, l := range lines {
			if _, rest, _ := strings.Cut(l, "  "); rest != tt.want {
				t.Errorf("%v: printed %q, want %q after the time", tt.args, rest, tt.want)
			}
		}
	}
}
