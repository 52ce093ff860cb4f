package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/gateway/demo"
	"github.com/meridian-metrics/meridian/integration/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// demoServer serves the demo upstream without latency, counting requests.
func demoServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	h := demo.Handler(demo.Config{Latency: demo.Constant(0)})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// checkAccounting checks the invariants every Result must satisfy.
func checkAccounting(t *testing.T, r Result) {
	t.Helper()
	if r.Sent != r.Succeeded+r.Failed+r.TransportErrors {
		t.Fatalf("sent %d != %d succeeded + %d failed + %d transport errors", r.Sent, r.Succeeded, r.Failed, r.TransportErrors)
	}
	var byStatus uint64
	for _, n := range r.ByStatus {
		byStatus += n
	}
	if byStatus != r.Succeeded+r.Failed {
		t.Fatalf("by-status counts sum to %d, want %d", byStatus, r.Succeeded+r.Failed)
	}
}

func TestRunExactCounts(t *testing.T) {
	srv, hits := demoServer(t)
	var onResult sync.Map
	res, err := Run(context.Background(), Config{
		Targets:    []string{srv.URL + "/x?keep=1"},
		RPS:        2000,
		Requests:   200,
		ErrorRatio: 0.25,
		OnResult: func(status int, err error) {
			v, _ := onResult.LoadOrStore(status, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, res)
	if res.Sent != 200 || res.Succeeded != 150 || res.Failed != 50 || res.TransportErrors != 0 {
		t.Fatalf("result %v", res)
	}
	if res.ByStatus[200] != 150 || res.ByStatus[500] != 50 || len(res.ByStatus) != 2 {
		t.Fatalf("by status %v", res.ByStatus)
	}
	if hits.Load() != 200 {
		t.Fatalf("server saw %d requests, want 200", hits.Load())
	}
	for status, want := range map[int]int64{200: 150, 500: 50} {
		v, _ := onResult.Load(status)
		if v == nil || v.(*atomic.Int64).Load() != want {
			t.Errorf("OnResult saw status %d %v times, want %d", status, v, want)
		}
	}
	// Pacing: 200 requests at 2000/s take about 100ms, not much less.
	if res.Elapsed < 99*time.Millisecond {
		t.Errorf("200 requests at 2000 rps took only %s", res.Elapsed)
	}
}

func TestErrorRatioSpread(t *testing.T) {
	tests := []struct {
		ratio float64
		n     int
		want  int
	}{
		{0, 30, 0},
		{0.1, 30, 3},
		{0.1, 29, 2},
		{1.0 / 3, 30, 10},
		{0.5, 31, 15},
		{0.25, 1000, 250},
		{1, 30, 30},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.ratio, "/", tt.n), func(t *testing.T) {
			r := &runner{cfg: Config{ErrorRatio: tt.ratio}, targets: []target{{ok: "ok", fail: "fail"}}}
			got, lastFail := 0, -1
			for k := range tt.n {
				if r.url(k) == "fail" {
					got++
					// Evenly spread: failures are never closer than
					// floor(1/ratio) requests apart.
					if lastFail >= 0 && float64(k-lastFail) < 1/tt.ratio-1 {
						t.Fatalf("failures at %d and %d for ratio %v", lastFail, k, tt.ratio)
					}
					lastFail = k
				}
			}
			if got != tt.want {
				t.Fatalf("%d error requests, want %d", got, tt.want)
			}
		})
	}
}

// Every target gets its share of the error requests, whatever the ratio
// and the number of targets (counted over the round-robin sequence, 1/20
// over two targets put every error on the second).
func TestErrorRatioPerTarget(t *testing.T) {
	tests := []struct {
		ratio   float64
		targets int
		n       int
	}{
		{0.05, 2, 400},
		{0.1, 2, 400},
		{0.25, 4, 400},
		{0.2, 5, 500},
		{1.0 / 3, 3, 90},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.ratio, "/", tt.targets), func(t *testing.T) {
			r := &runner{cfg: Config{ErrorRatio: tt.ratio}}
			for i := range tt.targets {
				r.targets = append(r.targets, target{ok: fmt.Sprint("ok", i), fail: fmt.Sprint("fail", i)})
			}
			fails := make(map[string]int)
			for k := range tt.n {
				fails[r.url(k)]++
			}
			perTarget := tt.n / tt.targets
			for i := range tt.targets {
				if got, want := fails[fmt.Sprint("fail", i)], int(float64(perTarget)*tt.ratio+1e-9); got != want {
					t.Errorf("target %d: %d error requests of %d, want %d", i, got, perTarget, want)
				}
			}
		})
	}
}

func TestRunRoundRobin(t *testing.T) {
	a, hitsA := demoServer(t)
	b, hitsB := demoServer(t)
	res, err := Run(context.Background(), Config{Targets: []string{a.URL, b.URL}, RPS: 5000, Requests: 51})
	if err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, res)
	if hitsA.Load() != 26 || hitsB.Load() != 25 {
		t.Fatalf("targets got %d and %d requests, want 26 and 25", hitsA.Load(), hitsB.Load())
	}
}

func TestRunDuration(t *testing.T) {
	srv, _ := demoServer(t)
	// Requests are due at 0, 5ms, ... 95ms: exactly 20 before 100ms.
	res, err := Run(context.Background(), Config{Targets: []string{srv.URL}, RPS: 200, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, res)
	if res.Sent != 20 || res.Succeeded != 20 {
		t.Fatalf("result %v, want 20 requests", res)
	}
	if res.Elapsed < 95*time.Millisecond {
		t.Fatalf("elapsed %s, want at least 95ms", res.Elapsed)
	}
}

// TestRunCancel cancels a run while requests are in flight: the run stops
// sending, the in-flight requests finish (they are not cancelled), and the
// totals are exact.
func TestRunCancel(t *testing.T) {
	var started, finished atomic.Int64
	h := demo.Handler(demo.Config{Latency: demo.Constant(40 * time.Millisecond)})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		h.ServeHTTP(w, r)
		finished.Add(1)
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var results atomic.Int64
	res, err := Run(ctx, Config{
		Targets:  []string{srv.URL},
		RPS:      500,
		Requests: 100000,
		OnResult: func(int, error) {
			if results.Add(1) == 10 {
				cancel() // requests sent since are still in flight
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	checkAccounting(t, res)
	if res.Sent < 10 || res.Sent > 1000 {
		t.Fatalf("sent %d", res.Sent)
	}
	if res.TransportErrors != 0 || res.Succeeded != res.Sent {
		t.Fatalf("result %v: in-flight requests must complete, not be cut off", res)
	}
	if int64(res.Sent) != started.Load() || started.Load() != finished.Load() {
		t.Fatalf("sent %d, server started %d and finished %d", res.Sent, started.Load(), finished.Load())
	}
	if res.Sent <= 10 {
		t.Logf("no request was in flight at cancel time (sent %d)", res.Sent)
	}
}

func TestRunContinuous(t *testing.T) {
	srv, _ := demoServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	res, err := Run(ctx, Config{Targets: []string{srv.URL}, RPS: 1000, Continuous: true,
		OnResult: func(int, error) {
			if n.Add(1) == 25 {
				cancel()
			}
		}})
	if err != nil {
		t.Fatalf("continuous run ended by its context: %v, want nil", err)
	}
	checkAccounting(t, res)
	if res.Sent < 25 {
		t.Fatalf("sent %d", res.Sent)
	}
}

func TestRunTransportErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()

	truncating := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, "only ten b")
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}))
	defer truncating.Close()

	slow := httptest.NewServer(demo.Handler(demo.Config{Latency: demo.Constant(demo.MaxDelay)}))
	defer slow.Close()

	tests := []struct {
		name    string
		target  string
		timeout time.Duration
	}{
		{"connection refused", dead, 0},
		{"truncated body", truncating.URL, 0},
		{"timeout", slow.URL, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errs atomic.Int64
			res, err := Run(context.Background(), Config{Targets: []string{tt.target}, RPS: 1000, Requests: 5,
				Timeout: tt.timeout,
				OnResult: func(status int, err error) {
					if status == 0 && err != nil {
						errs.Add(1)
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			checkAccounting(t, res)
			if res.Sent != 5 || res.TransportErrors != 5 || errs.Load() != 5 {
				t.Fatalf("result %v (OnResult saw %d errors), want 5 transport errors", res, errs.Load())
			}
		})
	}
}

func TestRunBoundsConcurrency(t *testing.T) {
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
	}))
	defer srv.Close()
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = Run(context.Background(), Config{Targets: []string{srv.URL}, RPS: 10000, Requests: 30, Concurrency: 3})
	}()
	// All three workers get a request; nothing more may start.
	wait.For(t, 5*time.Second, "three requests in flight", func() bool { return inFlight.Load() >= 3 })
	close(release)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	checkAccounting(t, res)
	if res.Sent != 30 || peak.Load() != 3 {
		t.Fatalf("sent %d with a peak of %d in flight, want 30 with at most (and reaching) 3", res.Sent, peak.Load())
	}
}

func TestRunInvalidConfig(t *testing.T) {
	good := func() Config { return Config{Targets: []string{"http://127.0.0.1:1/"}, RPS: 10, Requests: 1} }
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no targets", func(c *Config) { c.Targets = nil }, "no targets"},
		{"relative target", func(c *Config) { c.Targets = []string{"/path"} }, `target 1 "/path": want an absolute http:// or https:// URL`},
		{"bad scheme", func(c *Config) { c.Targets = append(c.Targets, "ws://h/") }, `target 2 "ws://h/"`},
		{"unparsable target", func(c *Config) { c.Targets = []string{"http://h/%zz"} }, "target 1"},
		{"zero rps", func(c *Config) { c.RPS = 0 }, "rps 0 must be a positive number"},
		{"nan rps", func(c *Config) { c.RPS = math.NaN() }, "rps NaN"},
		{"no end", func(c *Config) { c.Requests = 0 }, "no end"},
		{"negative requests", func(c *Config) { c.Requests = -1 }, "requests -1 is negative"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "duration -1s is negative"},
		{"error ratio above 1", func(c *Config) { c.ErrorRatio = 1.5 }, "error ratio 1.5 must be between 0 and 1"},
		{"negative error ratio", func(c *Config) { c.ErrorRatio = -0.1 }, "error ratio -0.1"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -2 }, "concurrency -2 is negative"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			res, err := Run(context.Background(), cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want ErrInvalidConfig containing %q", err, tt.want)
			}
			if res.Sent != 0 {
				t.Fatalf("sent %d requests with an invalid config", res.Sent)
			}
		})
	}
}

func TestResultString(t *testing.T) {
	r := Result{Sent: 100, Succeeded: 88, Failed: 10, TransportErrors: 2,
		ByStatus: map[int]uint64{500: 4, 200: 80, 302: 8, 404: 6}, Elapsed: 1002345 * time.Microsecond}
	want := "sent 100 requests in 1.002s: 88 got 2xx/3xx, 10 got 4xx/5xx, 2 transport errors (200: 80, 302: 8, 404: 6, 500: 4)"
	if got := r.String(); got != want {
		t.Fatalf("String() =\n%s\nwant\n%s", got, want)
	}
	empty := Result{}
	if got := empty.String(); got != "sent 0 requests in 0s: 0 got 2xx/3xx, 0 got 4xx/5xx, 0 transport errors" {
		t.Fatalf("empty String() = %s", got)
	}
}
