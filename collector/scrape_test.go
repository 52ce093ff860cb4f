package collector

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

func TestProfilesReadRecordedExpositions(t *testing.T) {
	ms := uint64(time.Millisecond)
	for _, tc := range []struct {
		fixture, profile string
		match            map[string]string
		want             rawReading
	}{
		{"envoy.prom", "envoy", map[string]string{"envoy_http_conn_manager_prefix": "ingress_http"}, rawReading{
			Success: 980, Errors: 20, Count: 1000, SumNanos: 9876500 * uint64(time.Microsecond), Active: 3,
			Buckets: []uint64{400, 300, 200, 50, 40, 8, 2, 0, 0, 0, 0, 0},
		}},
		{"traefik.prom", "traefik", map[string]string{"entrypoint": "web"}, rawReading{
			Success: 510, Errors: 25, Count: 535, SumNanos: 36750 * ms, Active: 4,
			// Traefik's bounds 0.1, 0.3, 1.2, 5 s land in Meridian's 100 ms,
			// 500 ms, 2.5 s and 5 s buckets (see rebucket's error bound).
			Buckets: []uint64{0, 0, 0, 0, 480, 0, 40, 0, 9, 6, 0, 0},
		}},
		{"caddy.prom", "caddy", nil, rawReading{
			Success: 900, Errors: 100, Count: 1000, SumNanos: 18400 * ms, Active: 6,
			Buckets: []uint64{100, 200, 440, 240, 15, 5, 0, 0, 0, 0, 0, 0},
		}},
		{"kairos.prom", "kairos", nil, rawReading{
			Success: 1500, Errors: 47, Count: 1547, SumNanos: 19337500 * uint64(time.Microsecond), Active: 2,
			Buckets: make([]uint64, proto.NumLatencyBuckets),
		}},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			f, err := os.Open("testdata/" + tc.fixture)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, ok := Profile(tc.profile)
			if !ok {
				t.Fatalf("no profile %q", tc.profile)
			}
			m.Match = tc.match
			got, err := ParseExposition(f, m)
			if err != nil {
				t.Fatal(err)
			}
			if got.Success != tc.want.Success || got.Errors != tc.want.Errors || got.Count != tc.want.Count ||
				got.SumNanos != tc.want.SumNanos || got.Active != tc.want.Active || !slices.Equal(got.Buckets, tc.want.Buckets) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseExpositionErrors(t *testing.T) {
	m, _ := Profile("traefik")
	for name, text := range map[string]string{
		"not an exposition":      "this is { not prometheus",
		"requests series absent": "# TYPE other_total counter\nother_total 1\n",
		"latency not histogram":  "traefik_entrypoint_requests_total{code=\"200\"} 1\ntraefik_entrypoint_request_duration_seconds 3\n",
	} {
		if _, err := ParseExposition(strings.NewReader(text), m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRebucketErrorBound checks the documented bound: the converted CDF at
// every Meridian bound is never above the true one and never below what the
// source's largest bound at or below it guarantees; with shared bounds the
// conversion is exact.
func TestRebucketErrorBound(t *testing.T) {
	exact := rebucket(proto.LatencyBounds[:], []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 12)
	if !slices.Equal(exact, []uint64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
		t.Fatalf("same bounds: %v, want one per bucket", exact)
	}
	// A source with one bucket (0, 1s] of 10 requests: all land in the 1 s
	// bucket, the one holding the upper bound.
	if got := rebucket([]time.Duration{time.Second}, []uint64{10}, 10); got[7] != 10 {
		t.Fatalf("coarse bucket: %v", got)
	}
	// Not cumulative (a broken source): counts never go negative, nothing
	// is lost.
	got := rebucket([]time.Duration{time.Millisecond, 2 * time.Millisecond}, []uint64{5, 3}, 9)
	var n uint64
	for _, c := range got {
		n += c
	}
	if n != 9 {
		t.Fatalf("non-cumulative source: %v sums to %d, want 9", got, n)
	}
	// Random bounds: the bound holds at every Meridian bound.
	bounds := []time.Duration{700 * time.Microsecond, 3 * time.Millisecond, 7 * time.Millisecond, 30 * time.Millisecond,
		120 * time.Millisecond, 400 * time.Millisecond, 3 * time.Second, 20 * time.Second}
	cum := []uint64{3, 9, 20, 41, 60, 70, 71, 73}
	out := rebucket(bounds, cum, 80)
	var conv uint64
	for i, b := range proto.LatencyBounds {
		conv += out[i]
		var lower uint64 // requests certainly at or below b
		for j, sb := range bounds {
			if sb <= b {
				lower = cum[j]
			}
		}
		if conv != lower {
			t.Fatalf("at %s: converted CDF %d, want exactly the source CDF at its largest bound ≤ %s (%d)", b, conv, b, lower)
		}
	}
}

// exposer serves a Kairos-like exposition whose counters the test moves.
type exposer struct {
	mu       sync.Mutex
	ok, errs int
	down     bool
}

func (e *exposer) set(ok, errs int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ok, e.errs = ok, errs
}

func (e *exposer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "kairos_requests_success_total %d\nkairos_requests_error_total %d\nkairos_response_time_avg 10\nkairos_active_connections 1\n", e.ok, e.errs)
}

func TestScrapeSourceCountsResetsOnTopAndResumes(t *testing.T) {
	e := &exposer{}
	srv := httptest.NewServer(e)
	defer srv.Close()
	m, _ := Profile("kairos")
	newSrc := func() *ScrapeSource {
		s, err := NewScrapeSource(ScrapeConfig{URL: srv.URL, Mapping: m, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := newSrc()
	ctx := context.Background()
	step := func(s *ScrapeSource, ok, errs int, wantOK, wantErr uint64) {
		t.Helper()
		e.set(ok, errs)
		if err := s.ScrapeOnce(ctx); err != nil {
			t.Fatal(err)
		}
		c, _ := s.Read()
		if c.RequestsSuccess != wantOK || c.RequestsError != wantErr || c.RequestsTotal != wantOK+wantErr {
			t.Fatalf("after gateway at %d/%d: counted %d/%d, want %d/%d", ok, errs, c.RequestsSuccess, c.RequestsError, wantOK, wantErr)
		}
		if c.DurationCount != c.RequestsTotal || c.DurationSumNanos != c.DurationCount*uint64(10*time.Millisecond) {
			t.Fatalf("duration count %d sum %d for %d requests at a 10 ms mean", c.DurationCount, c.DurationSumNanos, c.RequestsTotal)
		}
	}
	step(s, 100, 10, 100, 10)
	step(s, 150, 12, 150, 12)
	// The gateway restarted: the old boot's counters stay until the
	// collector has published its final report and calls NewBoot.
	step(s, 5, 1, 150, 12)
	select {
	case <-s.Resets():
	default:
		t.Fatal("a counter reset was not signalled")
	}
	step(s, 6, 1, 150, 12)
	s.NewBoot()
	c, _ := s.Read()
	if c.RequestsSuccess != 6 || c.RequestsError != 1 {
		t.Fatalf("new boot starts at %d/%d, want the gateway's 6/1", c.RequestsSuccess, c.RequestsError)
	}
	step(s, 20, 3, 20, 3)

	// A collector restarted from the checkpointed state counts only what
	// is new.
	c, state := s.Read()
	s2 := newSrc()
	if err := s2.Restore(c, state); err != nil {
		t.Fatal(err)
	}
	step(s2, 20, 3, 20, 3)
	step(s2, 30, 3, 30, 3)

	e.mu.Lock()
	e.down = true
	e.mu.Unlock()
	if err := s2.ScrapeOnce(ctx); err == nil {
		t.Fatal("a 503 scrape was accepted")
	}
}

// FuzzParseExposition feeds the exposition reader arbitrary input with every
// profile: an error is fine, a panic or a negative gauge is not.
func FuzzParseExposition(f *testing.F) {
	for _, name := range []string{"envoy.prom", "traefik.prom", "caddy.prom", "kairos.prom"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add("kairos_requests_success_total 1e300\nkairos_requests_error_total NaN\nkairos_response_time_avg -Inf\n")
	f.Fuzz(func(t *testing.T, text string) {
		for _, name := range ProfileNames() {
			m, _ := Profile(name)
			r, err := ParseExposition(strings.NewReader(text), m)
			if err != nil {
				continue
			}
			if r.Active < 0 || len(r.Buckets) != proto.NumLatencyBuckets {
				t.Fatalf("%s: %+v", name, r)
			}
		}
	})
}

// TestCollectorPublishesAGatewayRestartAsANewBoot: the old boot ends with a
// final report holding everything counted before the restart, and the new
// boot's reports carry the gateway's new counters from zero, as a restarted
// Meridian gateway's would.
func TestCollectorPublishesAGatewayRestartAsANewBoot(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub, err := nc.SubscribeSync(proto.ReportSubject("eu", "kairos-1"))
	if err != nil {
		t.Fatal(err)
	}
	e := &exposer{}
	e.set(40, 2)
	srv := httptest.NewServer(e)
	defer srv.Close()
	m, _ := Profile("kairos")
	src, err := NewScrapeSource(ScrapeConfig{URL: srv.URL, Mapping: m, Interval: 5 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	col, err := NewCollector(CollectorConfig{
		NATS: nc, Region: "eu", Instance: "kairos-1", Interval: 5 * time.Millisecond, Source: src,
		CheckpointPath: filepath.Join(t.TempDir(), "cp"), Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	until := func(cond func(proto.Report) bool) proto.Report {
		t.Helper()
		for {
			r := next(t, sub)
			if cond(r) {
				return r
			}
		}
	}
	first := until(func(r proto.Report) bool { return r.RequestsSuccess == 40 })
	e.set(3, 1) // the gateway restarted and served 4 requests
	final := until(func(r proto.Report) bool { return r.Final })
	if final.BootID != first.BootID || final.RequestsSuccess != 40 || final.RequestsError != 2 {
		t.Fatalf("final report %s %d/%d, want boot %s at 40/2", final.BootID, final.RequestsSuccess, final.RequestsError, first.BootID)
	}
	r := next(t, sub)
	if r.BootID == first.BootID || r.Seq != 1 || r.RequestsSuccess != 3 || r.RequestsError != 1 {
		t.Fatalf("after the restart: boot %s seq %d %d/%d; want a new boot from seq 1 at 3/1", r.BootID, r.Seq, r.RequestsSuccess, r.RequestsError)
	}
	if col.BootID() != r.BootID {
		t.Fatalf("BootID() = %s, reports carry %s", col.BootID(), r.BootID)
	}
}
