package aggregator

import (
	"encoding/binary"
	"slices"

	"github.com/meridian-metrics/meridian/proto"
)

// latTick is the high-resolution histogram of the requests a scope was
// reported during one tick.
type latTick struct {
	t int64 // unix second of the tick
	h proto.Histogram
}

// latRing is a scope's tick histograms over the same sliding window as
// avg_response_time: one histogram per tick for the last width ticks, times
// strictly increasing. Entries are never modified once pushed (snapshots
// share their buckets); a second tick in the same second replaces the newest.
//
// Unlike the cumulative (sum, count) samples of window, ticks hold deltas:
// a cumulative histogram per tick would cost the whole histogram per second
// of the window per scope, while a tick's delta holds only the buckets its
// requests hit.
type latRing struct {
	ring []latTick // capacity width; nil until the scope's first histogram
	head int       // index of the newest entry
	n    int
}

// stepBack empties the ring when tick t is older than its newest entry:
// the clock stepped back and the ticks no longer describe the past.
func (w *latRing) stepBack(t int64) bool {
	if w.n > 0 && t < w.ring[w.head].t {
		w.n = 0
		return true
	}
	return false
}

// newest returns the newest entry when it is of second t.
func (w *latRing) newest(t int64) *latTick {
	if w.n > 0 && w.ring[w.head].t == t {
		return &w.ring[w.head]
	}
	return nil
}

// push appends tick t's histogram, dropping the oldest entry when full.
func (w *latRing) push(t int64, h proto.Histogram) {
	w.head = (w.head + 1) % len(w.ring)
	w.ring[w.head] = latTick{t: t, h: h}
	if w.n < len(w.ring) {
		w.n++
	}
}

// at is the entry i ticks before the newest.
func (w *latRing) at(i int) *latTick { return &w.ring[(w.head-i+len(w.ring))%len(w.ring)] }

// latWindow is an instance's latency window: its last width tick
// histograms, packed (about 2.5 bytes a bucket instead of 16, so an
// instance at 100 requests a second keeps about 2 KB instead of 13 KB), and
// the report deltas applied since the last tick. The window's quantiles are
// computed only when the instance's snapshot is wanted (quantiles),
// unpacking its few ticks; the ring is kept up every tick so that they are
// right from the moment it is.
type latWindow struct {
	ring []packedTick // capacity width; nil until the first histogram
	head int
	n    int
	pend []*proto.Histogram
}

type packedTick struct {
	t int64
	b []byte // packHist form; its array is reused when the slot is
}

// add queues a report's delta for the next tick.
func (w *latWindow) add(d *proto.Histogram, width int64) {
	if w.ring == nil {
		w.ring = make([]packedTick, width)
	}
	w.pend = append(w.pend, d)
}

// tick merges the pending deltas into tick t's histogram (a second call in
// the same second adds to it) and returns it, nil when no request with a
// histogram was reported in it. scratch is the merger's reusable
// accumulator, unpack its reusable bucket buffer.
func (w *latWindow) tick(t int64, scratch *proto.DenseHist, unpack *[]proto.HistBucket) *proto.Histogram {
	if w.ring == nil {
		// Never had a histogram: every tick so far is empty, so skipping
		// them changes no quantile.
		return nil
	}
	if w.n > 0 && t < w.ring[w.head].t {
		w.n = 0 // the clock stepped back: the ticks no longer describe the past
	}
	var same *packedTick
	if w.n > 0 && w.ring[w.head].t == t {
		same = &w.ring[w.head]
	}
	var cur proto.Histogram
	switch {
	case len(w.pend) == 0 && same == nil:
	case len(w.pend) == 1 && same == nil:
		// The common case: one report this tick. Deltas are never
		// modified, so the snapshot can hold it as it is.
		cur = *w.pend[0]
	default:
		scratch.Reset()
		if same != nil {
			addPacked(scratch, same.b, unpack)
		}
		for _, d := range w.pend {
			scratch.Add(d)
		}
		// New buckets every tick: snapshots hold them beyond the tick.
		cur = scratch.AppendSparse(nil)
	}
	clear(w.pend)
	w.pend = w.pend[:0]
	if same == nil {
		w.head = (w.head + 1) % len(w.ring)
		if w.n < len(w.ring) {
			w.n++
		}
		same = &w.ring[w.head]
	}
	same.t, same.b = t, packHist(same.b[:0], &cur)
	if len(cur.Buckets) == 0 {
		return nil
	}
	return &cur
}

// quantiles writes the quantiles of the ticks after t−width to out; call it
// after tick(t).
func (w *latWindow) quantiles(t, width int64, scratch *proto.DenseHist, unpack *[]proto.HistBucket, out *[proto.NumLatencyQuantiles]float64) {
	scratch.Reset()
	for i := range w.n {
		e := &w.ring[(w.head-i+len(w.ring))%len(w.ring)]
		if e.t <= t-width {
			break
		}
		addPacked(scratch, e.b, unpack)
	}
	scratch.Quantiles(proto.LatencyQuantiles[:], out[:])
}

// packHist appends h as uvarints: over, then per bucket the slot's distance
// from the previous one (from −1 for the first) and the count.
func packHist(dst []byte, h *proto.Histogram) []byte {
	// Room for two-byte counts at once: grown append by append, a first
	// packing would copy itself several times.
	dst = slices.Grow(dst, 10+3*len(h.Buckets))
	dst = binary.AppendUvarint(dst, h.Over)
	prev := int32(-1)
	for _, b := range h.Buckets {
		dst = binary.AppendUvarint(dst, uint64(b.Slot-prev))
		dst = binary.AppendUvarint(dst, b.Count)
		prev = b.Slot
	}
	return dst
}

// unpackHist returns a packHist histogram.
func unpackHist(b []byte) proto.Histogram {
	var buf []proto.HistBucket
	over := unpackInto(b, &buf)
	return proto.Histogram{Buckets: buf, Over: over}
}

// unpackInto appends a packHist histogram's buckets to (*buf)[:0] and
// returns its over.
func unpackInto(b []byte, buf *[]proto.HistBucket) uint64 {
	if len(b) == 0 {
		*buf = (*buf)[:0]
		return 0
	}
	over, n := binary.Uvarint(b)
	b = b[n:]
	out := (*buf)[:0]
	slot := int32(-1)
	for len(b) > 0 {
		gap, n := binary.Uvarint(b)
		c, m := binary.Uvarint(b[n:])
		b = b[n+m:]
		slot += int32(gap)
		out = append(out, proto.HistBucket{Slot: slot, Count: c})
	}
	*buf = out
	return over
}

// addPacked adds a packHist histogram to d, unpacking through buf. The
// merger packed it, so it is well formed.
func addPacked(d *proto.DenseHist, b []byte, buf *[]proto.HistBucket) {
	if len(b) == 0 {
		return
	}
	over := unpackInto(b, buf)
	d.Add(&proto.Histogram{Buckets: *buf, Over: over})
}

// runLat is the latency window of the cluster and of a region, which merge
// the deltas of many instances every tick: cur accumulates them as reports
// are applied, and sum holds the ticks in the window (the newest in entries
// of the ring), adding each new tick and subtracting each that leaves. A
// tick then costs a scan of the touched slots, whatever the number of
// instances, instead of re-merging every delta and all the window's ticks
// (about five times the additions at ten ticks). Counts add and subtract
// modulo 2^64, so sum holds exactly the merge of the window's ticks, and
// its quantiles are those of that merge.
type runLat struct {
	latRing
	cur, sum *proto.DenseHist // nil until the first delta (about 10 KB each)
	pending  bool             // cur holds something since the last tick
	in       int
}

// add adds a report's delta to the tick in progress.
func (w *runLat) add(d *proto.Histogram, width int64) {
	if w.cur == nil {
		w.ring = make([]latTick, width)
		w.cur, w.sum = new(proto.DenseHist), new(proto.DenseHist)
	}
	w.cur.Add(d)
	w.pending = true
}

// tick closes tick t (a second call in the same second adds to it), writes
// the window's quantiles over the ticks after t−width to out and returns
// the histogram of tick t, nil when it has none.
func (w *runLat) tick(t int64, width int64, out *[proto.NumLatencyQuantiles]float64) *proto.Histogram {
	if w.cur == nil {
		*out = [proto.NumLatencyQuantiles]float64{}
		return nil
	}
	var add proto.Histogram
	if w.pending {
		// New buckets every tick: snapshots hold them beyond the tick.
		add = w.cur.AppendSparse(nil)
		w.cur.Reset()
		w.pending = false
	}
	if w.stepBack(t) {
		w.sum.Reset()
		w.in = 0
	}
	cur := add
	if same := w.newest(t); same != nil {
		// The newest entry is in the sum (it is inside every window).
		if len(add.Buckets) > 0 || add.Over > 0 {
			same.h = same.h.Merged(&add)
		}
		cur = same.h
	} else {
		if w.n == len(w.ring) && w.in == w.n {
			w.sum.Sub(&w.at(w.n - 1).h) // pushed out below
			w.in--
		}
		w.push(t, add)
		w.in++
	}
	w.sum.Add(&add)
	for w.in > 0 {
		e := w.at(w.in - 1)
		if e.t > t-width {
			break
		}
		w.sum.Sub(&e.h)
		w.in--
	}
	w.sum.Quantiles(proto.LatencyQuantiles[:], out[:])
	if len(cur.Buckets) == 0 {
		return nil
	}
	return &cur
}

// recordLatency takes the instance's new cumulative histogram h (nil when
// the report had none) and queues what it adds for the instance, its region
// and the cluster. reset means the instance's counters restarted, so h
// counts in full. Without a known baseline (the instance's earlier reports
// had no histogram) h only becomes the baseline: its requests were counted
// over an unknown span and would distort the window.
func (m *Merger) recordLatency(in *instState, h *proto.Histogram, seq uint64, reset bool) {
	if h == nil {
		in.hist, in.histKnown = proto.Histogram{Buckets: in.hist.Buckets[:0]}, false
		return
	}
	// h may be a decoder's, reused for the next report: what is kept
	// (the baseline, the delta) is copied out of it.
	var d proto.Histogram
	switch {
	case reset:
		d = h.Clone()
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
			d = h.Clone()
		}
	}
	// The baseline's array is the merger's own and reused: a report's
	// histogram is about the size of the last one.
	in.hist = proto.Histogram{Buckets: append(in.hist.Buckets[:0], h.Buckets...), Over: h.Over}
	in.histKnown, in.histSeq = true, seq
	if len(d.Buckets) == 0 {
		return
	}
	in.lat.add(&d, m.width)
	in.region.lat.add(&d, m.width)
	m.cluster.lat.add(&d, m.width)
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
