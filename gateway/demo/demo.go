// Package demo is the built-in upstream for `meridian dev` and the tests: an
// HTTP handler that answers any path with a small JSON body after a simulated
// latency, and lets each request ask for a status and a delay.
//
// Query parameters override the defaults per request:
//
//	?status=503   answer with this status (100–599, except 101). A 1xx status
//	              is sent as an informational response followed by a 200.
//	?delay=25ms   wait this long (a Go duration, 0 to MaxDelay) instead of a
//	              random latency.
//
// Invalid values are answered with 400 and a text explaining the valid ones.
// The wait ends early when the request's context ends (the client went away),
// and then nothing is written.
//
// Concurrency contract: the handler is safe for concurrent use. Latency draws
// share one random source under a mutex, so with a seeded Config.Rand and
// requests served one at a time the sequence of latencies is deterministic.
package demo

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults and limits.
const (
	DefaultMinLatency = 5 * time.Millisecond
	DefaultMaxLatency = 40 * time.Millisecond
	// MaxDelay caps ?delay= so a request cannot pin a handler indefinitely.
	MaxDelay = 10 * time.Second
)

// Config configures the demo handler. Zero fields take the documented
// defaults.
type Config struct {
	// Latency draws the latency of a request that does not pass ?delay=. It
	// is called with the handler's random source, under the handler's mutex.
	// Results are clamped to [0, MaxDelay]. Default:
	// Uniform(DefaultMinLatency, DefaultMaxLatency).
	Latency func(rng *rand.Rand) time.Duration
	// Rand is the random source. Default: randomly seeded. Inject a seeded
	// one for deterministic latencies; the handler serialises its use.
	Rand *rand.Rand
}

// Uniform draws latencies uniformly from [lo, hi]. It panics unless
// 0 <= lo <= hi, a programming error.
func Uniform(lo, hi time.Duration) func(*rand.Rand) time.Duration {
	if lo < 0 || hi < lo {
		panic(fmt.Sprintf("demo.Uniform: range [%s, %s] is invalid; want 0 <= lo <= hi", lo, hi))
	}
	span := int64(hi-lo) + 1
	return func(rng *rand.Rand) time.Duration {
		return lo + time.Duration(rng.Int64N(span))
	}
}

// Constant makes every request take d; Constant(0) answers at once.
func Constant(d time.Duration) func(*rand.Rand) time.Duration {
	return func(*rand.Rand) time.Duration { return d }
}

// Response is the JSON body the handler writes.
type Response struct {
	Status int    `json:"status"`
	Method string `json:"method"`
	Path   string `json:"path"`
	// DelayNanos is the latency the handler waited.
	DelayNanos int64 `json:"delay_ns"`
}

// Handler returns the demo handler.
func Handler(cfg Config) http.Handler {
	if cfg.Latency == nil {
		cfg.Latency = Uniform(DefaultMinLatency, DefaultMaxLatency)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &handler{cfg: cfg}
}

type handler struct {
	cfg Config
	mu  sync.Mutex // guards cfg.Rand
}

func (h *handler) drawLatency() time.Duration {
	h.mu.Lock()
	d := h.cfg.Latency(h.cfg.Rand)
	h.mu.Unlock()
	return min(max(d, 0), MaxDelay)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	status := http.StatusOK
	if v, ok := q["status"]; ok {
		s, err := parseStatus(v[len(v)-1])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status = s
	}
	var delay time.Duration
	if v, ok := q["delay"]; ok {
		d, err := parseDelay(v[len(v)-1])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		delay = d
	} else {
		delay = h.drawLatency()
	}

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone; there is no one to answer
		}
	}

	final := status
	if status < 200 {
		// Informational: send it, then the final answer.
		w.WriteHeader(status)
		final = http.StatusOK
	}
	if !bodyAllowed(final) {
		w.WriteHeader(final)
		return
	}
	body, _ := json.Marshal(Response{Status: status, Method: r.Method, Path: r.URL.Path, DelayNanos: int64(delay)})
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(final)
	_, _ = w.Write(body)
}

func parseStatus(v string) (int, error) {
	s, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("status %q is not a number; want an HTTP status from 100 to 599, e.g. ?status=503", v)
	case s < 100 || s > 599:
		return 0, fmt.Errorf("status %d is out of range; want an HTTP status from 100 to 599, e.g. ?status=503", s)
	case s == http.StatusSwitchingProtocols:
		return 0, fmt.Errorf("status 101 needs a protocol upgrade, which the demo does not do; want 100 or 102 to 599")
	}
	return s, nil
}

func parseDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("delay %q is not a Go duration; want e.g. ?delay=25ms, at most %s", v, MaxDelay)
	case d < 0:
		return 0, fmt.Errorf("delay %s is negative; want 0 to %s", d, MaxDelay)
	case d > MaxDelay:
		return 0, fmt.Errorf("delay %s exceeds the cap of %s", d, MaxDelay)
	}
	return d, nil
}

// bodyAllowed mirrors net/http: 204 and 304 responses carry no body.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}
