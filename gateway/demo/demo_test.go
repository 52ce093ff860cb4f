package demo

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// instant is a handler whose default latency is zero.
func instant() http.Handler { return Handler(Config{Latency: Constant(0)}) }

func serve(h http.Handler, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	return rec
}

func decode(t *testing.T, rec *httptest.ResponseRecorder) Response {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var r Response
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return r
}

func TestHandlerStatus(t *testing.T) {
	tests := []struct {
		target   string
		want     int
		wantBody bool
	}{
		{"/", 200, true},
		{"/any/path", 200, true},
		{"/?status=201", 201, true},
		{"/?status=302", 302, true},
		{"/?status=404", 404, true},
		{"/?status=500", 500, true},
		{"/?status=599", 599, true},
		{"/?status=204", 204, false},
		{"/?status=304", 304, false},
		{"/?status=200&status=503", 503, true}, // the last value wins
	}
	h := instant()
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := serve(h, tt.target)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if !tt.wantBody {
				if rec.Body.Len() != 0 {
					t.Fatalf("body %q on a %d", rec.Body, tt.want)
				}
				return
			}
			r := decode(t, rec)
			path, _, _ := strings.Cut(tt.target, "?")
			if r.Status != tt.want || r.Path != path || r.Method != "GET" || r.DelayNanos != 0 {
				t.Fatalf("body %+v", r)
			}
		})
	}
}

func TestHandlerRejectsBadParameters(t *testing.T) {
	tests := []struct {
		target string
		want   string // in the explanation
	}{
		{"/?status=abc", `status "abc" is not a number`},
		{"/?status=", `status "" is not a number`},
		{"/?status=99", "status 99 is out of range"},
		{"/?status=600", "status 600 is out of range"},
		{"/?status=101", "status 101 needs a protocol upgrade"},
		{"/?delay=soon", `delay "soon" is not a Go duration`},
		{"/?delay=25", `delay "25" is not a Go duration`},
		{"/?delay=-1s", "delay -1s is negative"},
		{"/?delay=10s1ns", "exceeds the cap of 10s"},
		{"/?status=200&delay=1h", "delay 1h0m0s exceeds the cap of 10s"},
	}
	h := instant()
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := serve(h, tt.target)
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", rec.Code)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Fatalf("explanation %q does not contain %q", rec.Body, tt.want)
			}
		})
	}
}

// TestHandlerInformational checks that ?status=1xx sends an informational
// response and then a final 200, over real HTTP.
func TestHandlerInformational(t *testing.T) {
	srv := httptest.NewServer(instant())
	defer srv.Close()
	var got []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		got = append(got, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", srv.URL+"/?status=103", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r Response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 103 || resp.StatusCode != 200 || r.Status != 103 {
		t.Fatalf("informational %v, final %d, body %+v; want 103 then 200", got, resp.StatusCode, r)
	}
}

func TestHandlerDelayParameter(t *testing.T) {
	h := instant()
	start := time.Now()
	rec := serve(h, "/?delay=30ms")
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("answered after %s, want at least 30ms", d)
	}
	if r := decode(t, rec); r.DelayNanos != int64(30*time.Millisecond) {
		t.Fatalf("delay_ns %d", r.DelayNanos)
	}
}

// TestHandlerLatencyDeterministic checks that a seeded Rand gives the same
// latencies as the distribution drawn directly with the same seed.
func TestHandlerLatencyDeterministic(t *testing.T) {
	dist := Uniform(0, 500*time.Microsecond)
	h := Handler(Config{Latency: dist, Rand: rand.New(rand.NewPCG(7, 11))})
	want := rand.New(rand.NewPCG(7, 11))
	distinct := map[int64]bool{}
	for i := range 10 {
		r := decode(t, serve(h, "/"))
		if exp := dist(want); r.DelayNanos != int64(exp) {
			t.Fatalf("request %d waited %d, want %d", i, r.DelayNanos, exp)
		}
		distinct[r.DelayNanos] = true
	}
	if len(distinct) < 5 {
		t.Fatalf("latencies %v are not spread", distinct)
	}
}

func TestHandlerDefaultLatency(t *testing.T) {
	h := Handler(Config{Rand: rand.New(rand.NewPCG(1, 2))})
	for range 2 {
		r := decode(t, serve(h, "/"))
		if d := time.Duration(r.DelayNanos); d < DefaultMinLatency || d > DefaultMaxLatency {
			t.Fatalf("default latency %s outside [%s, %s]", d, DefaultMinLatency, DefaultMaxLatency)
		}
	}
}

func TestDrawLatencyClamps(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		-time.Second: 0,
		time.Hour:    MaxDelay,
		time.Second:  time.Second,
	} {
		h := Handler(Config{Latency: Constant(in)}).(*handler)
		if got := h.drawLatency(); got != want {
			t.Errorf("latency %s drawn as %s, want %s", in, got, want)
		}
	}
}

func TestUniform(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	u := Uniform(10*time.Millisecond, 12*time.Millisecond)
	for range 1000 {
		if d := u(rng); d < 10*time.Millisecond || d > 12*time.Millisecond {
			t.Fatalf("drew %s outside [10ms, 12ms]", d)
		}
	}
	if d := Uniform(time.Second, time.Second)(rng); d != time.Second {
		t.Fatalf("a one-point range drew %s", d)
	}
	for _, r := range [][2]time.Duration{{-1, 0}, {2, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Uniform(%s, %s) did not panic", r[0], r[1])
				}
			}()
			Uniform(r[0], r[1])
		}()
	}
}

// writeSpy records whether anything was written.
type writeSpy struct {
	h       http.Header
	written bool
}

func (w *writeSpy) Header() http.Header         { return w.h }
func (w *writeSpy) Write(b []byte) (int, error) { w.written = true; return len(b), nil }
func (w *writeSpy) WriteHeader(int)             { w.written = true }

// TestHandlerCancellation checks that a request whose client goes away ends
// its delay at once and writes nothing.
func TestHandlerCancellation(t *testing.T) {
	for _, target := range []string{"/?delay=10s", "/"} {
		t.Run(target, func(t *testing.T) {
			h := Handler(Config{Latency: Constant(MaxDelay)})
			ctx, cancel := context.WithCancel(context.Background())
			req := httptest.NewRequest("GET", target, nil).WithContext(ctx)
			w := &writeSpy{h: make(http.Header)}
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.ServeHTTP(w, req)
			}()
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the handler kept waiting after its request was cancelled")
			}
			if w.written {
				t.Fatal("the handler wrote to a client that had gone")
			}
		})
	}
}

func TestHandlerHead(t *testing.T) {
	srv := httptest.NewServer(instant())
	defer srv.Close()
	resp, err := srv.Client().Head(srv.URL + "/?status=418")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 418 {
		t.Fatalf("HEAD status %d, want 418", resp.StatusCode)
	}
}
