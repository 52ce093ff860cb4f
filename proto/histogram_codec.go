package proto

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"sync"
)

// HistogramVersion is the version of the histogram encoding this build
// writes and reads.
//
// Wire form (a JSON object inside a Report or Snapshot):
//
//	{"v":1,"schema":6,"zero":3,"over":0,"spans":[[-420,2],[5,1]],"counts":[7,1,4]}
//
// spans are Prometheus-style runs of consecutive keys: the first span starts
// at its absolute key, each later one that many keys after the previous
// span's end; counts are the buckets' counts in key order (absolute, not
// delta-encoded: they stay readable and JSON numbers of small counts are
// short anyway). zero is the zero bucket; over counts observations clamped
// into the top bucket (already included in its count).
//
// A histogram of another version or schema is not an error: the message it
// travels in stays valid and the histogram reads as unsupported (Supported
// false), so a newer gateway's report still counts its requests on an older
// aggregator and vice versa.
const HistogramVersion = 1

type histWire struct {
	Version int        `json:"v"`
	Schema  int        `json:"schema"`
	Zero    uint64     `json:"zero"`
	Over    uint64     `json:"over"`
	Spans   [][2]int64 `json:"spans"`
	Counts  []uint64   `json:"counts"`
}

var histWirePool = sync.Pool{New: func() any { return new(histWire) }}

// MarshalJSON writes the wire form.
func (h Histogram) MarshalJSON() ([]byte, error) {
	return h.AppendJSON(make([]byte, 0, 32+8*len(h.Buckets))), nil
}

// AppendJSON appends the wire form to dst.
func (h *Histogram) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, HistogramVersion, 10)
	dst = append(dst, `,"schema":`...)
	dst = strconv.AppendInt(dst, HistSchema, 10)
	bs := h.Buckets
	var zero uint64
	if len(bs) > 0 && bs[0].Slot == 0 {
		zero, bs = bs[0].Count, bs[1:]
	}
	dst = append(dst, `,"zero":`...)
	dst = strconv.AppendUint(dst, zero, 10)
	dst = append(dst, `,"over":`...)
	dst = strconv.AppendUint(dst, h.Over, 10)
	dst = append(dst, `,"spans":[`...)
	prevEnd := 0 // key after the previous span
	for i := 0; i < len(bs); {
		j := i + 1
		for j < len(bs) && bs[j].Slot == bs[j-1].Slot+1 {
			j++
		}
		start := SlotKey(int(bs[i].Slot))
		off := start - prevEnd
		if i == 0 {
			off = start
		} else {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = strconv.AppendInt(dst, int64(off), 10)
		dst = append(dst, ',')
		dst = strconv.AppendInt(dst, int64(j-i), 10)
		dst = append(dst, ']')
		prevEnd = start + (j - i)
		i = j
	}
	dst = append(dst, `],"counts":[`...)
	for i, b := range bs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendUint(dst, b.Count, 10)
	}
	return append(dst, "]}"...)
}

// UnmarshalJSON reads the wire form, validating it: keys inside the tracked
// range and increasing, as many counts as the spans cover, a total count
// that fits 64 bits, and over not above the top bucket's count.
func (h *Histogram) UnmarshalJSON(data []byte) error { return h.unmarshal(data, nil) }

// unmarshal is UnmarshalJSON appending the buckets to buf[:0] (allocating
// when buf is nil).
func (h *Histogram) unmarshal(data []byte, buf []HistBucket) error {
	// Every report carries a histogram of hundreds of buckets: its spans
	// and counts are read into pooled buffers, and only the buckets are
	// allocated, if at all.
	w := histWirePool.Get().(*histWire)
	defer histWirePool.Put(w)
	*w = histWire{Spans: w.Spans[:0], Counts: w.Counts[:0]}
	if !parseHistFast(data, w) {
		*w = histWire{}
		if err := json.Unmarshal(data, w); err != nil {
			return fmt.Errorf("decode histogram: %v: %w", err, ErrMalformed)
		}
	}
	*h = Histogram{}
	if w.Version != HistogramVersion || w.Schema != HistSchema {
		h.unsupported = true
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("decode histogram: "+format+": %w", append(args, ErrMalformed)...)
	}
	if len(w.Counts) > HistSlots-1 || len(w.Spans) > HistSlots-1 {
		return bad("more than %d buckets", HistSlots-1)
	}
	if buf == nil {
		h.Buckets = make([]HistBucket, 0, len(w.Counts)+1)
	} else {
		h.Buckets = slices.Grow(buf[:0], len(w.Counts)+1)
	}
	var total, carry uint64
	if w.Zero > 0 {
		total = w.Zero
		h.Buckets = append(h.Buckets, HistBucket{Slot: 0, Count: w.Zero})
	}
	next, ci := int64(0), 0
	for i, sp := range w.Spans {
		off, n := sp[0], sp[1]
		if i > 0 && off < 0 {
			return bad("span %d has a negative offset", i)
		}
		if n < 0 || n > int64(len(w.Counts)-ci) {
			return bad("span %d length %d does not match the counts", i, n)
		}
		start := off
		if i > 0 {
			start = next + off
		}
		if n > 0 && (start < HistMinKey || start+n-1 > HistMaxKey) {
			return bad("span %d keys %d..%d outside %d..%d", i, start, start+n-1, HistMinKey, HistMaxKey)
		}
		slot := int32(KeySlot(int(start)))
		for _, c := range w.Counts[ci : ci+int(n)] {
			if c > 0 {
				if total, carry = bits.Add64(total, c, carry); carry != 0 {
					return bad("total count overflows 64 bits")
				}
				h.Buckets = append(h.Buckets, HistBucket{Slot: slot, Count: c})
			}
			slot++
		}
		ci += int(n)
		next = start + n
	}
	if ci != len(w.Counts) {
		return bad("%d counts for %d span buckets", len(w.Counts), ci)
	}
	var top uint64
	if len(h.Buckets) > 0 && h.Buckets[len(h.Buckets)-1].Slot == HistSlots-1 {
		top = h.Buckets[len(h.Buckets)-1].Count
	}
	if w.Over > top {
		return bad("over %d exceeds the top bucket's %d", w.Over, top)
	}
	h.Over = w.Over
	return nil
}

// Supported reports whether h was read from an encoding this build knows.
// An unsupported histogram is empty; its message is still valid.
func (h *Histogram) Supported() bool { return h != nil && !h.unsupported }

// Validate checks the invariants the decoder guarantees, for histograms
// built in code: slots in range and strictly increasing, no empty buckets,
// over within the top bucket.
func (h *Histogram) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid histogram: "+format+": %w", append(args, ErrMalformed)...)
	}
	prev := int32(-1)
	var top uint64
	for _, b := range h.Buckets {
		if b.Slot <= prev || b.Slot >= HistSlots {
			return bad("slot %d out of order or range", b.Slot)
		}
		if b.Count == 0 {
			return bad("empty bucket %d", b.Slot)
		}
		prev = b.Slot
		if b.Slot == HistSlots-1 {
			top = b.Count
		}
	}
	if h.Over > top {
		return bad("over %d exceeds the top bucket's %d", h.Over, top)
	}
	return nil
}
