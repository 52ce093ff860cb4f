package proto

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// realisticHist is a gateway's cumulative histogram after n requests of a
// realistic spread: log-normal around 40 ms (σ 0.8, so p99 ≈ 250 ms) with
// 1 % slow requests around 1.5 s.
func realisticHist(n int) Histogram {
	r := rand.New(rand.NewPCG(4, 2))
	var d DenseHist
	for range n {
		v := time.Duration(math.Exp(math.Log(40e6) + 0.8*r.NormFloat64()))
		if r.IntN(100) == 0 {
			v = time.Duration(math.Exp(math.Log(1.5e9) + 0.3*r.NormFloat64()))
		}
		slot, over := HistSlot(v)
		var o uint64
		if over {
			o = 1
		}
		d.AddSlot(slot, 1, o)
	}
	return d.AppendSparse(nil)
}

// BenchmarkHistogramWire encodes and decodes the cumulative histogram a
// gateway reports, after 1 s, 1 min and 1 h at 100 requests/s, and the
// histogram of one tick at 20 and 1000 requests/s (what each 1 s history
// snapshot carries). It reports the bytes and buckets of each.
func BenchmarkHistogramWire(b *testing.B) {
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"tick-20rps", 20}, {"tick-1000rps", 1000},
		{"report-1s-100rps", 100}, {"report-1min-100rps", 6000}, {"report-1h-100rps", 360_000},
	} {
		h := realisticHist(tc.n)
		data, _ := json.Marshal(h)
		b.Run(tc.name+"/encode", func(b *testing.B) {
			buf := make([]byte, 0, 8192)
			b.ReportAllocs()
			for b.Loop() {
				buf = h.AppendJSON(buf[:0])
			}
			b.ReportMetric(float64(len(buf)), "bytes")
			b.ReportMetric(float64(len(h.Buckets)), "buckets")
		})
		b.Run(tc.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var back Histogram
				if err := json.Unmarshal(data, &back); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDenseQuantiles is reading the five snapshot quantiles from a
// merged window.
func BenchmarkDenseQuantiles(b *testing.B) {
	h := realisticHist(100_000)
	var d DenseHist
	d.Add(&h)
	var out [NumLatencyQuantiles]float64
	b.ReportAllocs()
	for b.Loop() {
		d.Quantiles(LatencyQuantiles[:], out[:])
	}
}
