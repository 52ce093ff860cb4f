package aggregator

import "github.com/meridian-metrics/meridian/proto"

// latTick is the high-resolution histogram of the requests a scope was
// reported during one tick.
type latTick struct {
	t int64 // unix second of the tick
	h proto.Histogram
}

// latWindow is a scope's latency histograms over the same sliding window as
// avg_response_time: one merged histogram per tick for the last width
// ticks, and the report deltas applied since the last tick (pend). The
// deltas are shared, read-only, by an instance, its region and the cluster.
//
// Unlike the cumulative (sum, count) samples of window, ticks hold deltas:
// a cumulative histogram per tick would cost the whole histogram per second
// of the window per scope, while a tick's delta holds only the buckets its
// requests hit.
type latWindow struct {
	ring []latTick // capacity width; entries are never modified once pushed
	head int       // index of the newest entry
	n    int
	pend []*proto.Histogram
}

func newLatWindow(width int64) latWindow {
	return latWindow{ring: make([]latTick, width)}
}

// add queues a report's delta for the next tick.
func (w *latWindow) add(d *proto.Histogram) { w.pend = append(w.pend, d) }

// tick merges the pending deltas into tick t's histogram (a second call in
// the same second adds to it) and writes the window's quantiles, over the
// ticks after t−width, to out. It returns the histogram of tick t, nil when
// no request with a histogram was reported in it. scratch is the merger's
// reusable accumulator.
func (w *latWindow) tick(t int64, width int64, scratch *proto.DenseHist, out *[proto.NumLatencyQuantiles]float64) *proto.Histogram {
	if w.n > 0 && t < w.ring[w.head].t {
		w.n = 0 // the clock stepped back: the ticks no longer describe the past
	}
	same := w.n > 0 && w.ring[w.head].t == t
	var cur latTick
	switch {
	case len(w.pend) == 0 && !same:
		cur = latTick{t: t}
	case len(w.pend) == 1 && !same:
		// The common case of an instance: one report this tick. Deltas are
		// never modified, so the tick can hold it as it is.
		cur = latTick{t: t, h: *w.pend[0]}
	default:
		scratch.Reset()
		if same {
			scratch.Add(&w.ring[w.head].h)
		}
		for _, d := range w.pend {
			scratch.Add(d)
		}
		// New buckets every tick: snapshots hold them beyond the tick.
		cur = latTick{t: t, h: scratch.AppendSparse(nil)}
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

// recordLatency takes the instance's new cumulative histogram h (nil when
// the report had none) and queues what it adds for the instance, its region
// and the cluster. reset means the instance's counters restarted, so h
// counts in full. Without a known baseline (the instance's earlier reports
// had no histogram) h only becomes the baseline: its requests were counted
// over an unknown span and would distort the window.
func (m *Merger) recordLatency(in *instState, h *proto.Histogram, seq uint64, reset bool) {
	if h == nil {
		in.hist, in.histKnown = proto.Histogram{}, false
		return
	}
	var d proto.Histogram
	switch {
	case reset:
		d = *h
	case in.histKnown && seq <= in.histSeq:
		// Not newer than the baseline: a report this merger applied before
		// a restore rolled the sequence back (see keepLatency). Its
		// requests are counted already.
		return
	case in.histKnown:
		var ok bool
		if d, ok = h.Delta(&in.hist, nil); !ok {
			// A newer report whose histogram went down while its counters
			// did not: the histogram alone restarted (a collector resuming
			// its counters from a checkpoint), so it counts in full.
			d = *h
		}
	}
	in.hist, in.histKnown, in.histSeq = *h, true, seq
	if len(d.Buckets) == 0 {
		return
	}
	in.lat.add(&d)
	in.region.lat.add(&d)
	m.cluster.lat.add(&d)
}

// keepLatency carries the latency state of old — the merger Restore
// replaces — into m: the windows of the cluster and of every region, and of
// every instance still in the same boot with its histogram baseline. A hot
// follower that takes over has built them from the very reports the leader
// merged, so its percentiles continue without a gap; the state written to
// the key-value bucket carries none of this (see InstanceState).
func (m *Merger) keepLatency(old *Merger) {
	m.cluster.lat = old.cluster.lat
	for name, rg := range m.regions {
		if o, ok := old.regions[name]; ok {
			rg.lat = o.lat
		}
	}
	for name, in := range m.insts {
		if o, ok := old.insts[name]; ok && o.boot == in.boot {
			in.hist, in.histKnown, in.histSeq, in.lat = o.hist, o.histKnown, o.histSeq, o.lat
		}
	}
}
