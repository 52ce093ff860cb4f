package aggregator

import "math"

// seedTime marks a window's seed sample: it is older than any real tick, so
// until a scope has a full window of samples the mean covers everything
// since the seed.
const seedTime = math.MinInt64

// sample is a scope's cumulative response-time sum and count at one tick.
type sample struct {
	t     int64 // unix seconds of the tick; seedTime for the seed
	sum   uint64
	count uint64
}

// window is a fixed-size ring of per-tick samples of one scope, from which
// the sliding-window mean is (sum_now − sum_then) / (count_now − count_then).
// It holds at most one sample per second and never allocates after creation.
type window struct {
	s    []sample
	head int // index of the newest sample
	n    int // samples held
}

// newWindow makes a ring for a window of width seconds, seeded with the
// cumulative (sum, count) the scope had before anything was counted in it:
// zero for a scope that starts now, the current totals when state was
// restored without its samples.
func newWindow(width int64, sum, count uint64) window {
	w := window{s: make([]sample, width+1)}
	w.s[0] = sample{t: seedTime, sum: sum, count: count}
	w.n = 1
	return w
}

// observe records the scope's cumulative (sum, count) at tick t and returns
// the mean response time in milliseconds over the last width seconds: the
// requests counted after the newest sample at or before t−width (or after the
// oldest sample, when the ring does not reach back that far). It returns 0
// when no request was counted in that span. Sums are subtracted modulo 2^64,
// so a wrapped cumulative duration sum still yields the right difference.
func (w *window) observe(t int64, sum, count uint64, width int64) float64 {
	cur := sample{t: t, sum: sum, count: count}
	if w.n > 0 && t < w.s[w.head].t {
		// The clock stepped back: the samples no longer describe the past.
		// Start over from this tick; the mean is 0 until the next one.
		w.n = 0
	}
	switch {
	case w.n > 0 && w.s[w.head].t == t:
		w.s[w.head] = cur // a second call in the same second refines the sample
	default:
		w.head = (w.head + 1) % len(w.s)
		w.s[w.head] = cur
		if w.n < len(w.s) {
			w.n++
		}
	}
	base := w.s[(w.head-w.n+1+len(w.s))%len(w.s)] // oldest
	for i := 1; i < w.n; i++ {
		if s := w.s[(w.head-i+len(w.s))%len(w.s)]; s.t <= t-width {
			base = s
			break
		}
	}
	dc := cur.count - base.count
	if dc == 0 {
		return 0
	}
	return float64(cur.sum-base.sum) / float64(dc) / 1e6
}

// samples returns the ring's samples oldest first, for State.
func (w *window) samples() []WindowSample {
	out := make([]WindowSample, w.n)
	for i := range w.n {
		s := w.s[(w.head-w.n+1+i+len(w.s))%len(w.s)]
		out[i] = WindowSample{Time: s.t, DurationSumNanos: s.sum, DurationCount: s.count}
	}
	return out
}

// restoreWindow rebuilds a ring from State samples (oldest first, already
// validated as strictly increasing in time), keeping the newest ones that
// fit. Without samples it seeds the ring with the scope's current totals, so
// that the mean restarts from the restore instead of averaging over the
// scope's whole life.
func restoreWindow(width int64, ss []WindowSample, sum, count uint64) window {
	if len(ss) == 0 {
		return newWindow(width, sum, count)
	}
	w := window{s: make([]sample, width+1)}
	if len(ss) > len(w.s) {
		ss = ss[len(ss)-len(w.s):]
	}
	for i, s := range ss {
		w.s[i] = sample{t: s.Time, sum: s.DurationSumNanos, count: s.DurationCount}
	}
	w.n = len(ss)
	w.head = len(ss) - 1
	return w
}
