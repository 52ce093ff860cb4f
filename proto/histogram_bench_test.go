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
		d.Observe(v)
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

// BenchmarkSnapshotHistoryBytes is what one 1 s history message of a scope
// weighs before the histogram, with the five quantiles, and with the tick's
// histogram at 20 and 1000 requests/s: the history storage the latency
// percentiles add (× 86 400 per scope per day).
func BenchmarkSnapshotHistoryBytes(b *testing.B) {
	base := Snapshot{Version: SnapshotVersion, Scope: RegionScope("eu"), Time: time.Unix(1764766800, 0).UTC(),
		RequestsTotal: 123456789, RequestsSuccess: 123000000, RequestsError: 456789, ActiveConnections: 42,
		AvgResponseTimeMs: 48.123456789, SuccessRate: SuccessRateOf(123000000, 123456789),
		DurationSumNanos: 5941234567890123, DurationCount: 123456789, Instances: 4}
	for _, tc := range []struct {
		name string
		n    int // requests in the tick; -1: a snapshot of a build before the histogram
	}{{"before", -1}, {"idle", 0}, {"20rps", 20}, {"1000rps", 1000}} {
		s := base
		if tc.n >= 0 {
			h := realisticHist(max(tc.n, 1))
			s.LatencyHistogram = &h
			h.Quantiles(LatencyQuantiles[:], s.LatencyMs[:])
			if tc.n == 0 {
				s.LatencyHistogram, s.LatencyMs = nil, [NumLatencyQuantiles]float64{}
			}
		}
		b.Run(tc.name, func(b *testing.B) {
			var data []byte
			for b.Loop() {
				data, _ = json.Marshal(&s)
			}
			if tc.n < 0 {
				// Strip what this build adds, to weigh the old message.
				var m map[string]json.RawMessage
				json.Unmarshal(data, &m)
				delete(m, "latency_ms")
				data, _ = json.Marshal(m)
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
	}
}

// BenchmarkDecodeReportHistogram decodes a whole report without and with the
// histogram a gateway sends after a minute at 100 requests/s: what the
// histogram adds to every report an aggregator reads.
func BenchmarkDecodeReportHistogram(b *testing.B) {
	r := validReport()
	plain, _ := r.Encode()
	h := realisticHist(6000)
	r.LatencyHistogram = &h
	withHist, _ := r.Encode()
	for _, tc := range []struct {
		name string
		data []byte
	}{{"without", plain}, {"with-1min-histogram", withHist}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ReportMetric(float64(len(tc.data)), "bytes")
			for b.Loop() {
				if _, err := DecodeReport(tc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
