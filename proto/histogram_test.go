package proto

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// histOf builds the sparse histogram of ds, the way a gateway records them.
func histOf(ds []time.Duration) Histogram {
	var d DenseHist
	for _, v := range ds {
		d.Observe(v)
	}
	return d.AppendSparse(nil)
}

// exactQuantile is the nearest-rank quantile of the samples, in ms.
func exactQuantile(sorted []time.Duration, q float64) float64 {
	r := QuantileRank(q, uint64(len(sorted)))
	return float64(sorted[r-1]) / 1e6
}

// distributions are the shapes the bound must hold for; every value lies in
// the tracked range 100 µs – 60 s.
var distributions = []struct {
	name string
	gen  func(r *rand.Rand) time.Duration
}{
	{"uniform 1-500ms", func(r *rand.Rand) time.Duration {
		return time.Millisecond + time.Duration(r.Int64N(int64(499*time.Millisecond)))
	}},
	{"log-normal around 40ms", func(r *rand.Rand) time.Duration {
		return clampTracked(time.Duration(math.Exp(math.Log(40e6) + 0.8*r.NormFloat64())))
	}},
	{"bimodal 5ms/800ms", func(r *rand.Rand) time.Duration {
		if r.IntN(10) < 8 {
			return clampTracked(time.Duration(5e6 * (1 + 0.1*r.NormFloat64())))
		}
		return clampTracked(time.Duration(800e6 * (1 + 0.1*r.NormFloat64())))
	}},
	{"heavy tail pareto", func(r *rand.Rand) time.Duration {
		return clampTracked(time.Duration(2e6 / math.Pow(1-r.Float64(), 1/1.2)))
	}},
	{"one value", func(*rand.Rand) time.Duration { return 37 * time.Millisecond }},
	{"range edges", func(r *rand.Rand) time.Duration {
		return [...]time.Duration{100 * time.Microsecond, 60 * time.Second, time.Second}[r.IntN(3)]
	}},
}

func clampTracked(d time.Duration) time.Duration {
	return min(max(d, 100*time.Microsecond), 60*time.Second)
}

var testQuantiles = []float64{0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1}

func TestHistogramQuantileBound(t *testing.T) {
	for _, dist := range distributions {
		for _, n := range []int{1, 7, 100, 10_000, 200_000} {
			r := rand.New(rand.NewPCG(uint64(n), 15))
			ds := make([]time.Duration, n)
			for i := range ds {
				ds[i] = dist.gen(r)
			}
			h := histOf(ds)
			if h.Count() != uint64(n) {
				t.Fatalf("%s n=%d: count %d", dist.name, n, h.Count())
			}
			slices.Sort(ds)
			got := make([]float64, len(testQuantiles))
			h.Quantiles(testQuantiles, got)
			var dense DenseHist
			dense.Add(&h)
			gotDense := make([]float64, len(testQuantiles))
			dense.Quantiles(testQuantiles, gotDense)
			for i, q := range testQuantiles {
				want := exactQuantile(ds, q)
				if rel := math.Abs(got[i]-want) / want; rel > HistMaxRelativeError {
					t.Errorf("%s n=%d q=%v: got %.4f ms, exact %.4f ms, error %.3f%%", dist.name, n, q, got[i], want, rel*100)
				}
				if gotDense[i] != got[i] {
					t.Errorf("%s n=%d q=%v: dense %v != sparse %v", dist.name, n, q, gotDense[i], got[i])
				}
			}
		}
	}
}

func TestHistogramMergeEqualsUnion(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var union []time.Duration
	var merged DenseHist
	for part := range 17 {
		dist := distributions[part%len(distributions)]
		ds := make([]time.Duration, 1+r.IntN(3000))
		for i := range ds {
			ds[i] = dist.gen(r)
		}
		union = append(union, ds...)
		h := histOf(ds)
		// Through the wire, as reports travel.
		data, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		var back Histogram
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		merged.Add(&back)
	}
	want := histOf(union)
	got := merged.AppendSparse(nil)
	if !slices.Equal(got.Buckets, want.Buckets) || got.Over != want.Over {
		t.Fatalf("merge of 17 histograms differs from the histogram of their union")
	}
}

func TestHistSlotEdges(t *testing.T) {
	tests := []struct {
		d    time.Duration
		slot int
		over bool
	}{
		{-time.Second, 0, false},
		{0, 0, false},
		{99 * time.Microsecond, 0, false},
		{100 * time.Microsecond, 1, false}, // key HistMinKey
		{time.Second, KeySlot(0), false},   // 1 s is the upper edge of key 0
		{time.Second + 1, KeySlot(1), false},
		{2 * time.Second, KeySlot(64), false},
		{60 * time.Second, HistSlots - 1, false},
		{61 * time.Second, HistSlots - 1, true},
		{math.MaxInt64, HistSlots - 1, true},
	}
	for _, tc := range tests {
		slot, over := HistSlot(tc.d)
		if slot != tc.slot || over != tc.over {
			t.Errorf("HistSlot(%v) = %d, %v; want %d, %v", tc.d, slot, over, tc.slot, tc.over)
		}
	}
	// Every slot's quoted value maps back to the slot.
	for s := 1; s < HistSlots; s++ {
		if got, _ := HistSlot(time.Duration(SlotMillis(s) * 1e6)); got != s {
			t.Fatalf("slot %d: its midpoint %v ms maps to slot %d", s, SlotMillis(s), got)
		}
	}
}

func TestHistogramDelta(t *testing.T) {
	a := histOf([]time.Duration{time.Millisecond, 5 * time.Millisecond})
	b := histOf([]time.Duration{time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond, time.Second, 90 * time.Second})
	d, ok := b.Delta(&a, nil)
	want := histOf([]time.Duration{5 * time.Millisecond, time.Second, 90 * time.Second})
	if !ok || !slices.Equal(d.Buckets, want.Buckets) || d.Over != 1 {
		t.Fatalf("delta = %+v, %v; want %+v", d, ok, want)
	}
	if _, ok := a.Delta(&b, nil); ok {
		t.Fatal("a decrease was not detected")
	}
	c := histOf([]time.Duration{2 * time.Millisecond})
	if _, ok := c.Delta(&a, nil); ok {
		t.Fatal("a vanished bucket was not detected")
	}
}

func TestHistogramWire(t *testing.T) {
	h := histOf([]time.Duration{50 * time.Microsecond, time.Millisecond, time.Millisecond + 20*time.Microsecond, 3 * time.Millisecond, 2 * time.Minute})
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"schema":6,"zero":1,"over":1,"spans":[[-637,1],[1,1],[98,1],[914,1]],"counts":[1,1,1,1]}`
	if string(data) != want {
		t.Fatalf("wire form\n got %s\nwant %s", data, want)
	}
	var back Histogram
	if err := json.Unmarshal(data, &back); err != nil || !slices.Equal(back.Buckets, h.Buckets) || back.Over != 1 || !back.Supported() {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func TestHistogramDecodeRejects(t *testing.T) {
	tests := []struct{ in, want string }{
		{`[]`, "cannot unmarshal"},
		{`{"v":1,"schema":6,"spans":[[0,2]],"counts":[1]}`, "length 2 does not match"},
		{`{"v":1,"schema":6,"spans":[[0,1]],"counts":[1,2]}`, "2 counts for 1"},
		{`{"v":1,"schema":6,"spans":[[-900,1]],"counts":[1]}`, "outside"},
		{`{"v":1,"schema":6,"spans":[[379,2]],"counts":[1,1]}`, "outside"},
		{`{"v":1,"schema":6,"spans":[[0,1],[-1,1]],"counts":[1,1]}`, "negative offset"},
		{`{"v":1,"schema":6,"spans":[[0,1]],"counts":[18446744073709551615],"zero":1}`, "overflows"},
		{`{"v":1,"schema":6,"over":1,"spans":[[0,1]],"counts":[1]}`, "over 1 exceeds"},
		{`{"v":1,"schema":6,"spans":[[0,-1]],"counts":[]}`, "length -1"},
	}
	for _, tc := range tests {
		var h Histogram
		err := json.Unmarshal([]byte(tc.in), &h)
		if err == nil || !errors.Is(err, ErrMalformed) && !strings.Contains(err.Error(), "cannot unmarshal") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

// A histogram of an encoding this build does not know leaves the report
// valid: its requests count, its histogram is dropped.
func TestReportWithFutureHistogram(t *testing.T) {
	r := validReport()
	data, _ := r.Encode()
	data = []byte(strings.Replace(string(data), `"v":1,`, `"v":1,"latency_hist":{"v":2,"schema":7,"buckets":"AAEC"},`, 1))
	got, err := DecodeReport(data)
	if err != nil || got.LatencyHistogram != nil || got.RequestsTotal != r.RequestsTotal {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func FuzzDecodeHistogram(f *testing.F) {
	f.Add([]byte(`{"v":1,"schema":6,"zero":1,"over":1,"spans":[[-638,2],[100,1],[1015,1]],"counts":[1,1,1,1]}`))
	f.Add([]byte(`{"v":1,"schema":6,"spans":[[0,3],[0,1]],"counts":[1,0,3,4]}`))
	f.Add([]byte(`{"v":2}`))
	f.Add([]byte(` { "counts" : [ 1 ] , "spans":[[0, 1]],"v":1,"schema":6 } `))
	f.Add([]byte(`{"v":1,"schema":6,"spans":[[0,1,2]],"counts":[01]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fast parser agrees with encoding/json whenever it succeeds.
		var fast, slow histWire
		if parseHistFast(data, &fast) {
			if err := json.Unmarshal(data, &slow); err != nil {
				t.Fatalf("fast parser accepted %q, encoding/json: %v", data, err)
			}
			if fast.Version != slow.Version || fast.Schema != slow.Schema || fast.Zero != slow.Zero || fast.Over != slow.Over ||
				!slices.Equal(fast.Spans, slow.Spans) || !slices.Equal(fast.Counts, slow.Counts) {
				t.Fatalf("%q: fast %+v, encoding/json %+v", data, fast, slow)
			}
		}
		var h Histogram
		if err := json.Unmarshal(data, &h); err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoder accepted an invalid histogram: %v", err)
		}
		out, _ := json.Marshal(h)
		var back Histogram
		if err := json.Unmarshal(out, &back); err != nil || !slices.Equal(back.Buckets, h.Buckets) || back.Over != h.Over {
			t.Fatalf("re-encoding %s gave %s: %v", data, out, err)
		}
		q := make([]float64, NumLatencyQuantiles)
		h.Quantiles(LatencyQuantiles[:], q)
	})
}

// AddInPlace gives what Merged gives, whatever room the receiver has, and
// leaves the added histogram alone.
func TestHistogramAddInPlaceEqualsMerged(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	random := func() Histogram {
		var d DenseHist
		for range r.IntN(30) {
			d.AddSlot(r.IntN(HistSlots), uint64(1+r.IntN(9)), 0)
		}
		return d.AppendSparse(nil)
	}
	var acc Histogram
	for i := range 2000 {
		o := random()
		oCopy := o.Clone()
		want := acc.Merged(&o)
		acc.AddInPlace(&o)
		if !slices.Equal(acc.Buckets, want.Buckets) || acc.Over != want.Over {
			t.Fatalf("step %d: %v, want %v", i, acc, want)
		}
		if !slices.Equal(o.Buckets, oCopy.Buckets) {
			t.Fatalf("step %d: the added histogram changed", i)
		}
		if r.IntN(50) == 0 {
			acc = Histogram{}
		}
	}
}
