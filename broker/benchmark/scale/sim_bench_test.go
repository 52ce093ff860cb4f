package scale

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// BenchmarkSimEncode is the simulator's cost per report (publishing
// excluded): with 48-bucket histograms it bounds the load one core of the
// harness can generate.
func BenchmarkSimEncode(b *testing.B) {
	for _, k := range []int{0, DefaultHistogramBuckets} {
		b.Run(map[int]string{0: "no-histogram", DefaultHistogramBuckets: "48-buckets"}[k], func(b *testing.B) {
			sim := NewSimulator([]*nats.Conn{nil}, 100, []string{"eu"}, 1, "boot-1", k)
			w := sim.workers[0]
			now := time.Now()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := w.encode(&w.insts[i%len(w.insts)], now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
