//go:build linux

package benchmark

import (
	"testing"
	"time"
)

// TestReaderPhase feeds one subscriber's Snapshot receipt times (ms after
// its first) through the client's accounting: a late first Snapshot must
// not turn every later tick into one an interval late, and the phase is
// frozen once the window starts (at 5 s here).
func TestReaderPhase(t *testing.T) {
	ms := func(v int64) int64 { return v * int64(time.Millisecond) }
	tests := []struct {
		name     string
		receipts []int64 // ms after t0 (the first Snapshot's receipt)
		wantLags []int64 // ms, of the Snapshots in the window
		wantDups uint64
	}{
		{"on time", []int64{1000, 2000, 3000, 4000, 5000, 6002, 7001}, []int64{0, 2, 1}, 0},
		{"first written 60 ms late", []int64{940, 1940, 2940, 3940, 4940, 5941, 6940}, []int64{1, 0}, 0},
		{"jitter before the window", []int64{1003, 1998, 3001, 4000, 5000, 6000}, []int64{2, 2}, 0},
		{"late in the window counts", []int64{1000, 2000, 3000, 4000, 5000, 6030, 7000}, []int64{0, 30, 0}, 0},
		{"early in the window is a duplicate, not a new phase", []int64{1000, 2000, 3000, 4000, 5000, 5930, 7000}, []int64{0, 0}, 1},
		{"two for one tick", []int64{1000, 2000, 3000, 4000, 5000, 5010, 6000}, []int64{0, 0}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := &client{base: time.Now()}
			cl.w0.Store(ms(4990))
			r := &reader{cl: cl}
			c := &subConn{interval: int64(time.Second)}
			for _, at := range tt.receipts {
				r.snapshot(c, nil, ms(at))
			}
			var lags []int64
			for _, s := range r.samples {
				lags = append(lags, s.lag/int64(time.Millisecond))
			}
			if len(lags) != len(tt.wantLags) || r.t.Duplicates != tt.wantDups {
				t.Fatalf("lags %v ms, %d duplicates; want %v, %d", lags, r.t.Duplicates, tt.wantLags, tt.wantDups)
			}
			for i := range lags {
				if lags[i] != tt.wantLags[i] {
					t.Errorf("lags %v ms, want %v", lags, tt.wantLags)
					break
				}
			}
		})
	}
}

func TestIsSlow(t *testing.T) {
	tests := []struct {
		subscribers, slow int
		want              []int
	}{
		{10, 0, nil},
		{10, 2, []int{4, 9}},
		{10, 3, []int{2, 5, 8}},
		{7, 3, []int{1, 3, 5}},
		{5, 4, []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		spec := clientSpec{Subscribers: tt.subscribers, Slow: tt.slow}
		var got []int
		for i := range tt.subscribers {
			if spec.isSlow(i) {
				got = append(got, i)
			}
		}
		if len(got) != len(tt.want) || len(got) != tt.slow {
			t.Errorf("%d of %d slow: %v, want %v", tt.slow, tt.subscribers, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%d of %d slow: %v, want %v", tt.slow, tt.subscribers, got, tt.want)
				break
			}
		}
	}
}
