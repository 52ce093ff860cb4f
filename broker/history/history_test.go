package history

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// snap builds a consistent cluster snapshot at t0+sec.
func snap(sec int, total, errs uint64, active int64, durSumMs, durCount uint64) proto.Snapshot {
	return proto.Snapshot{
		Version: proto.SnapshotVersion, Time: t0.Add(time.Duration(sec) * time.Second),
		RequestsTotal: total, RequestsSuccess: total - errs, RequestsError: errs,
		ActiveConnections: active, SuccessRate: proto.SuccessRateOf(total-errs, total),
		DurationSumNanos: durSumMs * 1e6, DurationCount: durCount,
	}
}

func times(ss []proto.Snapshot) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = int(s.Time.Sub(t0) / time.Second)
	}
	return out
}

func TestRing(t *testing.T) {
	tests := []struct {
		name string
		cap  int
		add  []int // seconds after t0, in arrival order
		want []int
	}{
		{"in order", 5, []int{1, 2, 3}, []int{1, 2, 3}},
		{"wraps dropping oldest", 3, []int{1, 2, 3, 4, 5}, []int{3, 4, 5}},
		{"backfill older", 5, []int{10, 11, 3, 1, 2}, []int{1, 2, 3, 10, 11}},
		{"backfill into full ring drops oldest", 3, []int{10, 11, 12, 5}, []int{10, 11, 12}},
		{"backfill between keeps newest", 3, []int{10, 12, 14, 11}, []int{11, 12, 14}},
		{"same time replaces", 3, []int{1, 2, 2, 1}, []int{1, 2}},
		{"after wrap backfill", 4, []int{1, 2, 3, 4, 5, 6, 4}, []int{3, 4, 5, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRing(tc.cap)
			for _, sec := range tc.add {
				r.Add(snap(sec, uint64(sec), 0, 0, 0, 0))
			}
			got := times(r.Range(t0, t0.Add(time.Hour)))
			if len(got) != len(tc.want) || r.Len() != len(tc.want) {
				t.Fatalf("got %v (len %d), want %v", got, r.Len(), tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
			if l, ok := r.Latest(); !ok || int(l.Time.Sub(t0)/time.Second) != tc.want[len(tc.want)-1] {
				t.Fatalf("latest = %v, want %d", l.Time, tc.want[len(tc.want)-1])
			}
		})
	}
}

func TestRingRangeBounds(t *testing.T) {
	r := NewRing(10)
	for sec := 0; sec < 10; sec++ {
		r.Add(snap(sec, 0, 0, 0, 0, 0))
	}
	got := times(r.Range(t0.Add(3*time.Second), t0.Add(5*time.Second)))
	if len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("inclusive range 3..5 = %v", got)
	}
	if got := r.Range(t0.Add(20*time.Second), t0.Add(30*time.Second)); len(got) != 0 {
		t.Fatalf("range past the end = %v", got)
	}
}

func TestSeriesPerKind(t *testing.T) {
	// Six seconds; buckets of 3 s aligned at t0 (t0 is a multiple of 3 s).
	snaps := []proto.Snapshot{
		snap(0, 10, 0, 2, 100, 10),   // before range start? no: range starts at t0
		snap(1, 20, 1, 4, 200, 20),   // +10 req, +100 ms
		snap(2, 30, 1, 6, 1200, 30),  // +10 req, +1000 ms
		snap(3, 30, 1, 10, 1200, 30), // no requests
		snap(4, 40, 3, 0, 1600, 40),  // +10 req, +400 ms
		snap(5, 40, 3, 2, 1600, 40),
	}
	start, end := t0, t0.Add(5*time.Second)
	tests := []struct {
		m    proto.Metric
		want []float64
	}{
		{proto.RequestsTotal, []float64{30, 40}},
		{proto.RequestsError, []float64{1, 3}},
		{proto.ActiveConnections, []float64{4, 4}},
		// bucket 0 has no earlier snapshot: baseline is its first (sum 100 ms, count 10):
		// (1200-100)/(30-10) = 55 ms. bucket 1: (1600-1200)/(40-30) = 40 ms.
		{proto.AvgResponseTime, []float64{55, 40}},
		{proto.SuccessRate, []float64{100 * 29.0 / 30, 100 * 37.0 / 40}},
	}
	for _, tc := range tests {
		t.Run(tc.m.String(), func(t *testing.T) {
			got := Series(snaps, tc.m, start, end, 2)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d points %v, want %v", len(got), got, tc.want)
			}
			for i := range got {
				if d := got[i].Value - tc.want[i]; d > 1e-9 || d < -1e-9 {
					t.Errorf("point %d = %v, want %v", i, got[i].Value, tc.want[i])
				}
				if want := t0.Add(time.Duration(3*i) * time.Second); !got[i].Time.Equal(want) {
					t.Errorf("point %d at %v, want %v", i, got[i].Time, want)
				}
			}
		})
	}
}

func TestSeriesAvgUsesPreviousBucketAndZeroWhenIdle(t *testing.T) {
	snaps := []proto.Snapshot{
		snap(0, 10, 0, 0, 100, 10),
		snap(1, 20, 0, 0, 300, 20), // 10 requests, 200 ms → 20 ms
		snap(2, 20, 0, 0, 300, 20), // idle → 0
	}
	got := Series(snaps, proto.AvgResponseTime, t0.Add(time.Second), t0.Add(2*time.Second), 10)
	if len(got) != 2 || got[0].Value != 20 || got[1].Value != 0 {
		t.Fatalf("got %v, want [20 0]", got)
	}
}

func TestSeriesAvgAcrossDurationSumWrap(t *testing.T) {
	a, b := snap(0, 10, 0, 0, 0, 10), snap(1, 20, 0, 0, 0, 20)
	a.DurationSumNanos = math.MaxUint64 - 50e6 + 1 // 50 ms before the wrap
	b.DurationSumNanos = 150e6                     // 200 ms later, after it
	got := Series([]proto.Snapshot{a, b}, proto.AvgResponseTime, t0.Add(time.Second), t0.Add(time.Second), 10)
	if len(got) != 1 || got[0].Value != 20 {
		t.Fatalf("got %v, want one point of 20 ms (200 ms over 10 requests)", got)
	}
}

func TestSeriesBoundsPoints(t *testing.T) {
	var snaps []proto.Snapshot
	for sec := 0; sec <= 3600; sec++ {
		snaps = append(snaps, snap(sec, uint64(sec), 0, 1, 0, 0))
	}
	for _, points := range []int{1, 7, 720, 5000} {
		got := Series(snaps, proto.RequestsTotal, t0, t0.Add(time.Hour), points)
		if len(got) == 0 || len(got) > points {
			t.Fatalf("points=%d: got %d points", points, len(got))
		}
		if last := got[len(got)-1]; last.Value != 3600 {
			t.Fatalf("points=%d: last value %v, want the newest counter 3600", points, last.Value)
		}
	}
	if got := Series(nil, proto.RequestsTotal, t0, t0.Add(time.Hour), 10); got == nil || len(got) != 0 {
		t.Fatalf("empty input must give an empty, non-nil series (JSON []), got %#v", got)
	}
}

func TestStreamLoadRoundTrip(t *testing.T) {
	_, nc := natstest.StartTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// No stream yet: no history, no error.
	if got, err := Load(ctx, js, proto.ClusterScope(), t0, 10); err != nil || len(got) != 0 {
		t.Fatalf("load without stream = %v, %v", got, err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatalf("ensure is idempotent and updates: %v", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < 20; i++ {
		s := snap(0, uint64(i), 0, 0, 0, 0)
		s.Time = now.Add(time.Duration(i-20) * time.Second)
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := jetstream.WithMsgID(s.Scope.String() + "@" + s.Time.Format(time.RFC3339))
		if _, err := js.Publish(ctx, proto.SnapshotSubject(s.Scope), data, id); err != nil {
			t.Fatal(err)
		}
		if i == 5 { // a duplicate publish of the same second is stored once
			if _, err := js.Publish(ctx, proto.SnapshotSubject(s.Scope), data, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Another scope's snapshots must not leak in.
	other := snap(0, 999, 0, 0, 0, 0)
	other.Scope, other.Time = proto.RegionScope("eu"), now
	data, _ := other.Encode()
	if _, err := js.Publish(ctx, proto.SnapshotSubject(other.Scope), data); err != nil {
		t.Fatal(err)
	}

	got, err := Load(ctx, js, proto.ClusterScope(), now.Add(-10*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || got[0].RequestsTotal != 10 || got[9].RequestsTotal != 19 {
		t.Fatalf("load last 10 s: got %d snapshots %v", len(got), got)
	}
	got, err = Load(ctx, js, proto.ClusterScope(), now.Add(-time.Hour), 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].RequestsTotal != 16 || got[3].RequestsTotal != 19 {
		t.Fatalf("load capped at 4 must keep the newest: %v", got)
	}
}
