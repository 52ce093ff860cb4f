package proto

import (
	"slices"
	"time"
)

// HistBucket is one non-empty bucket of a sparse Histogram.
type HistBucket struct {
	Slot  int32 // dense slot: 0 is the zero bucket, see HistSlot
	Count uint64
}

// Histogram is a sparse latency histogram: its non-empty buckets in slot
// order, and how many of its observations were clamped from above the
// tracked range (those are also counted in the top bucket). In a Report it is
// cumulative since the instance booted; in a Snapshot it holds the requests
// reported during that tick.
//
// A Histogram is a value: methods never modify their receiver's buckets in
// place unless they say so, so one decoded histogram can be shared.
type Histogram struct {
	Buckets []HistBucket
	Over    uint64
	// unsupported marks a histogram decoded from an unknown version or
	// schema: empty, and to be ignored.
	unsupported bool
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += b.Count
	}
	return n
}

// Delta returns h − prev, bucket by bucket, appending the buckets to dst's
// backing array. ok is false when some count of prev exceeds h's: the
// cumulative counters went down, which means they restarted.
func (h *Histogram) Delta(prev *Histogram, dst []HistBucket) (d Histogram, ok bool) {
	if h.Over < prev.Over {
		return Histogram{}, false
	}
	if dst == nil {
		// Sized exactly: a report's delta is a few dozen of its hundreds
		// of buckets, and growing by appends would copy it several times.
		dst = make([]HistBucket, 0, h.deltaLen(prev))
	}
	out := dst[:0]
	i := 0
	for _, p := range prev.Buckets {
		for i < len(h.Buckets) && h.Buckets[i].Slot < p.Slot {
			out = append(out, h.Buckets[i])
			i++
		}
		if i == len(h.Buckets) || h.Buckets[i].Slot != p.Slot || h.Buckets[i].Count < p.Count {
			return Histogram{}, false
		}
		if c := h.Buckets[i].Count - p.Count; c > 0 {
			out = append(out, HistBucket{Slot: p.Slot, Count: c})
		}
		i++
	}
	out = append(out, h.Buckets[i:]...)
	return Histogram{Buckets: out, Over: h.Over - prev.Over}, true
}

// deltaLen is how many buckets h − prev has (a bound when prev is not
// below h).
func (h *Histogram) deltaLen(prev *Histogram) int {
	n, i := 0, 0
	for _, p := range prev.Buckets {
		for i < len(h.Buckets) && h.Buckets[i].Slot < p.Slot {
			n++
			i++
		}
		if i == len(h.Buckets) {
			break
		}
		if h.Buckets[i].Slot == p.Slot {
			if h.Buckets[i].Count != p.Count {
				n++
			}
			i++
		}
	}
	return n + len(h.Buckets) - i
}

// Clone returns a deep copy.
func (h *Histogram) Clone() Histogram {
	if h == nil {
		return Histogram{}
	}
	return Histogram{Buckets: append([]HistBucket(nil), h.Buckets...), Over: h.Over}
}

// DenseHist accumulates histograms over the dense slots, for merging many
// sparse histograms and reading quantiles. It remembers the range of slots it
// touched, so resetting and scanning cost that range, not all HistSlots. The
// zero value is empty and ready; it is about 10 KB, so keep one and reuse it.
type DenseHist struct {
	counts [HistSlots]uint64
	n      uint64
	over   uint64
	lo, hi int32 // touched slots, lo > hi when none
	used   bool
}

// Reset empties d.
func (d *DenseHist) Reset() {
	if d.used {
		clear(d.counts[d.lo : d.hi+1])
	}
	d.n, d.over, d.used = 0, 0, false
}

// Count is the number of observations added.
func (d *DenseHist) Count() uint64 { return d.n }

// Add adds h's counts. Counts wrap modulo 2^64 like every cumulative counter.
func (d *DenseHist) Add(h *Histogram) {
	if len(h.Buckets) == 0 {
		d.over += h.Over
		return
	}
	lo, hi := h.Buckets[0].Slot, h.Buckets[len(h.Buckets)-1].Slot
	if !d.used {
		d.lo, d.hi, d.used = lo, hi, true
	}
	d.lo, d.hi = min(d.lo, lo), max(d.hi, hi)
	for _, b := range h.Buckets {
		d.counts[b.Slot] += b.Count
		d.n += b.Count
	}
	d.over += h.Over
}

// Sub subtracts h's counts, which an earlier Add added: d then holds what
// it would hold had h never been added. Scans and Reset still cover the
// slots h touched, which read as empty.
func (d *DenseHist) Sub(h *Histogram) {
	for _, b := range h.Buckets {
		d.counts[b.Slot] -= b.Count
		d.n -= b.Count
	}
	d.over -= h.Over
}

// Observe adds one duration, as a gateway's Recorder records it.
func (d *DenseHist) Observe(v time.Duration) {
	slot, over := HistSlot(v)
	var o uint64
	if over {
		o = 1
	}
	d.AddSlot(slot, 1, o)
}

// AddSlot adds n observations in slot, the clamped ones among them counted
// in over.
func (d *DenseHist) AddSlot(slot int, n, over uint64) {
	d.Add(&Histogram{Buckets: []HistBucket{{Slot: int32(slot), Count: n}}, Over: over})
}

// AppendSparse returns d as a sparse histogram whose buckets are appended to
// dst[:0].
func (d *DenseHist) AppendSparse(dst []HistBucket) Histogram {
	out := dst[:0]
	if d.used {
		for s := d.lo; s <= d.hi; s++ {
			if c := d.counts[s]; c > 0 {
				out = append(out, HistBucket{Slot: s, Count: c})
			}
		}
	}
	return Histogram{Buckets: out, Over: d.over}
}

// Quantiles sets out[i] to the qs[i]-quantile in milliseconds, by nearest
// rank (QuantileRank), quoted at the bucket's logarithmic midpoint; qs must
// be ascending. With no observations every quantile is 0.
func (d *DenseHist) Quantiles(qs []float64, out []float64) {
	if d.n == 0 {
		clear(out[:len(qs)])
		return
	}
	var cum uint64
	s := d.lo
	for i, q := range qs {
		rank := QuantileRank(q, d.n)
		for cum+d.counts[s] < rank && s < d.hi {
			cum += d.counts[s]
			s++
		}
		out[i] = histSlotMillis[s]
	}
}

// Quantiles of a sparse histogram, as DenseHist.Quantiles.
func (h *Histogram) Quantiles(qs []float64, out []float64) {
	n := h.Count()
	if n == 0 {
		clear(out[:len(qs)])
		return
	}
	var cum uint64
	i := 0
	for j, q := range qs {
		rank := QuantileRank(q, n)
		for cum+h.Buckets[i].Count < rank && i < len(h.Buckets)-1 {
			cum += h.Buckets[i].Count
			i++
		}
		out[j] = histSlotMillis[h.Buckets[i].Slot]
	}
}

// Merged returns h + o as a new histogram; neither is modified.
func (h *Histogram) Merged(o *Histogram) Histogram {
	out := make([]HistBucket, 0, max(len(h.Buckets), len(o.Buckets)))
	a, b := h.Buckets, o.Buckets
	for len(a) > 0 && len(b) > 0 {
		switch {
		case a[0].Slot < b[0].Slot:
			out, a = append(out, a[0]), a[1:]
		case a[0].Slot > b[0].Slot:
			out, b = append(out, b[0]), b[1:]
		default:
			out = append(out, HistBucket{Slot: a[0].Slot, Count: a[0].Count + b[0].Count})
			a, b = a[1:], b[1:]
		}
	}
	out = append(append(out, a...), b...)
	return Histogram{Buckets: out, Over: h.Over + o.Over}
}

// AddInPlace adds o's counts to h, modifying h's buckets in place: h must
// own them (not share them with another histogram). Merging into spare
// capacity from the back, it allocates only when o brings more new slots
// than h has room for, and then leaves a quarter of headroom, so a
// histogram that keeps taking similar ones soon stops allocating.
func (h *Histogram) AddInPlace(o *Histogram) {
	h.Over += o.Over
	// Mostly every slot of o is in h already: add in place until one is not.
	i := 0
	for k, b := range o.Buckets {
		for i < len(h.Buckets) && h.Buckets[i].Slot < b.Slot {
			i++
		}
		if i == len(h.Buckets) || h.Buckets[i].Slot != b.Slot {
			h.mergeFrom(o.Buckets[k:], i)
			return
		}
		h.Buckets[i].Count += b.Count
	}
}

// mergeFrom merges ob, whose slots are all above h's first i, into h.
func (h *Histogram) mergeFrom(ob []HistBucket, i int) {
	fresh := 0
	for _, b := range ob {
		for i < len(h.Buckets) && h.Buckets[i].Slot < b.Slot {
			i++
		}
		if i == len(h.Buckets) || h.Buckets[i].Slot != b.Slot {
			fresh++
		}
	}
	n := len(h.Buckets) + fresh
	if n > cap(h.Buckets) {
		h.Buckets = slices.Grow(h.Buckets, n+n/4-len(h.Buckets))
	}
	a := h.Buckets[:len(h.Buckets)]
	out := h.Buckets[:n]
	j, k := len(a)-1, len(ob)-1
	for w := n - 1; k >= 0; w-- {
		switch {
		case j >= 0 && a[j].Slot > ob[k].Slot:
			out[w] = a[j]
			j--
		case j >= 0 && a[j].Slot == ob[k].Slot:
			out[w] = HistBucket{Slot: a[j].Slot, Count: a[j].Count + ob[k].Count}
			j--
			k--
		default:
			out[w] = ob[k]
			k--
		}
	}
	h.Buckets = out
}
