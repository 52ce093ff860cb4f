package benchmark

import (
	"math"
	"testing"
	"time"
)

func TestDistOf(t *testing.T) {
	vs := make([]int64, 0, 1000)
	for i := 1000; i >= 1; i-- { // unsorted on purpose
		vs = append(vs, int64(i)*int64(time.Millisecond))
	}
	got := distOf(vs)
	want := dist{N: 1000, Min: 1, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if got != want {
		t.Errorf("distOf(1..1000 ms) = %+v, want %+v", got, want)
	}
	if got := distOf(nil); got != (dist{}) {
		t.Errorf("distOf(nil) = %+v", got)
	}
	if got := distOf([]int64{-2e6, 5e6}); got.Min != -2 || got.P50 != -2 || got.P99 != 5 {
		t.Errorf("distOf with a negative value = %+v", got)
	}
}

func TestQuantileBetween(t *testing.T) {
	from := &histData{Bounds: []float64{0.01, 0.1, 1}, Cumulative: []uint64{5, 5, 5}, Count: 5}
	to := &histData{Bounds: []float64{0.01, 0.1, 1}, Cumulative: []uint64{55, 95, 105}, Count: 105}
	// Between the readings: 50 in (0, 0.01], 40 in (0.01, 0.1], 10 in (0.1, 1].
	tests := []struct {
		q, want float64
	}{
		{0.25, 0.005},  // half way through the first bucket
		{0.5, 0.01},    // its top
		{0.7, 0.055},   // half way through the second
		{0.95, 0.55},   // half way through the third
		{0.999, 0.991}, // near its top
	}
	for _, tt := range tests {
		got, ok := quantileBetween(from, to, tt.q)
		if !ok || math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("q%v = %v, %v; want %v", tt.q, got, ok, tt.want)
		}
	}
	if _, ok := quantileBetween(to, to, 0.5); ok {
		t.Error("no observations in between should not give a quantile")
	}
	if _, ok := quantileBetween(nil, to, 0.5); ok {
		t.Error("a missing reading should not give a quantile")
	}
	// Observations above the last bound count at it.
	over := &histData{Bounds: to.Bounds, Cumulative: []uint64{55, 95, 105}, Count: 205}
	if got, _ := quantileBetween(from, over, 0.99); got != 1 {
		t.Errorf("q0.99 in +Inf = %v, want the last bound", got)
	}
}

func TestDueTicks(t *testing.T) {
	const s = int64(time.Second)
	tests := []struct {
		name                   string
		t0, interval, from, to int64
		want                   int64
	}{
		{"window holds ticks 3 to 7", 0, s, 2*s + 1, 7 * s, 5},
		{"bounds are inclusive", 0, s, 3 * s, 7 * s, 5},
		{"phase offset", 250, s, 0, 3*s + 249, 2},
		{"tick 0 (the first Snapshot) is never due", 0, s, 0, s - 1, 0},
		{"window before t0", 5 * s, s, 0, 4 * s, 0},
		{"long interval, one tick", 0, 60 * s, 30 * s, 90 * s, 1},
		{"long interval, none", 0, 60 * s, 61 * s, 90 * s, 0},
		{"empty window", 0, s, 5 * s, 4 * s, 0},
		{"bad interval", 0, 0, 0, 9 * s, 0},
	}
	for _, tt := range tests {
		if got := dueTicks(tt.t0, tt.interval, tt.from, tt.to); got != tt.want {
			t.Errorf("%s: dueTicks = %d, want %d", tt.name, got, tt.want)
		}
	}
}
