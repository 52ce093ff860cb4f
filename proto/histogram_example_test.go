package proto_test

import (
	"fmt"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Two gateways' histograms merge exactly by adding their buckets; the
// quantiles of the merge are those of all their requests, within 0.55 %.
func ExampleDenseHist() {
	record := func(ds ...time.Duration) proto.Histogram {
		var d proto.DenseHist
		for _, v := range ds {
			d.Observe(v)
		}
		return d.AppendSparse(nil)
	}
	eu := record(10*time.Millisecond, 12*time.Millisecond, 250*time.Millisecond)
	us := record(8*time.Millisecond, 9*time.Millisecond, 11*time.Millisecond, 900*time.Millisecond)

	var cluster proto.DenseHist
	cluster.Add(&eu)
	cluster.Add(&us)
	var q [proto.NumLatencyQuantiles]float64
	cluster.Quantiles(proto.LatencyQuantiles[:], q[:])
	fmt.Printf("n=%d p50=%.2fms p99=%.1fms max=%.1fms\n", cluster.Count(), q[0], q[3], q[4])
	// Output:
	// n=7 p50=10.99ms p99=902.2ms max=902.2ms
}
