package aggregator

import "github.com/meridian-metrics/meridian/proto"

// The latency window as it was before the running sums (commit 4a0894a):
// every tick re-merges the whole window. TestLatencyWindowMatchesReference
// checks that the merger's percentiles stay bit-identical to it.

// refLatTick is the high-resolution histogram of the requests a scope was
// reported during one tick.
type refLatTick struct {
	t int64 // unix second of the tick
	h proto.Histogram
}

// refLatWindow is a scope's latency histograms over the same sliding window as
// avg_response_time: one merged histogram per tick for the last width
// ticks, and the report deltas applied since the last tick (pend). The
// deltas are shared, read-only, by an instance, its region and the cluster.
//
// Unlike the cumulative (sum, count) samples of window, ticks hold deltas:
// a cumulative histogram per tick would cost the whole histogram per second
// of the window per scope, while a tick's delta holds only the buckets its
// requests hit.
type refLatWindow struct {
	ring []refLatTick // capacity width; entries are never modified once pushed
	head int          // index of the newest entry
	n    int
	pend []*proto.Histogram
}

func newRefLatWindow(width int64) refLatWindow {
	return refLatWindow{ring: make([]refLatTick, width)}
}

// add queues a report's delta for the next tick.
func (w *refLatWindow) add(d *proto.Histogram) { w.pend = append(w.pend, d) }

// tick merges the pending deltas into tick t's histogram (a second call in
// the same second adds to it) and writes the window's quantiles, over the
// ticks after t−width, to out. It returns the histogram of tick t, nil when
// no request with a histogram was reported in it. scratch is the merger's
// reusable accumulator.
func (w *refLatWindow) tick(t int64, width int64, scratch *proto.DenseHist, out *[proto.NumLatencyQuantiles]float64) *proto.Histogram {
	if w.n > 0 && t < w.ring[w.head].t {
		w.n = 0 // the clock stepped back: the ticks no longer describe the past
	}
	same := w.n > 0 && w.ring[w.head].t == t
	var cur refLatTick
	switch {
	case len(w.pend) == 0 && !same:
		cur = refLatTick{t: t}
	case len(w.pend) == 1 && !same:
		// The common case of an instance: one report this tick. Deltas are
		// never modified, so the tick can hold it as it is.
		cur = refLatTick{t: t, h: *w.pend[0]}
	default:
		scratch.Reset()
		if same {
			scratch.Add(&w.ring[w.head].h)
		}
		for _, d := range w.pend {
			scratch.Add(d)
		}
		// New buckets every tick: snapshots hold them beyond the tick.
		cur = refLatTick{t: t, h: scratch.AppendSparse(nil)}
	}
	clear(w.pend)
	w.pend = w.pend[:0]
	if !same {
		w.head = (w.head + 1) % len(w.ring)
		if w.n < len(w.ring) {
			w.n++
		}
	}
	w.ring[w.head] = cur

	scratch.Reset()
	for i := range w.n {
		e := &w.ring[(w.head-i+len(w.ring))%len(w.ring)]
		if e.t <= t-width {
			break
		}
		scratch.Add(&e.h)
	}
	scratch.Quantiles(proto.LatencyQuantiles[:], out[:])
	if len(cur.h.Buckets) == 0 {
		return nil
	}
	// A copy, not the ring's slot, which a later tick overwrites: the
	// snapshot may outlive it. The buckets themselves are never modified.
	h := cur.h
	return &h
}
