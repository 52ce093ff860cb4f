package aggregator

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkRollupBoundary is a leader's ticks around a minute boundary at 10k
// and 100k instances on an embedded NATS server (reports merged by hand
// between ticks, outside the timings): the tick at :59 (ordinary-ms), the
// one at :00 that closes the minute and queues every instance rollup
// (boundary-ms), the next (next-ms), and boundary/ordinary, medians over
// the iterations; unacked is the history writes that went out without an
// ack (0 when no snapshot waited behind the rollups). The instance rollups
// drain in the background, paced over 40 s; ns/op is meaningless.
func BenchmarkRollupBoundary(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			r := newBurstRig(b, n, DefaultRollupSpread)
			ctx := context.Background()
			minute := t0
			var ord, bound, next []float64
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			for b.Loop() {
				minute = minute.Add(time.Minute)
				r.now = minute.Add(-2 * time.Second)
				ord = append(ord, ms(r.tick(ctx)))
				bound = append(bound, ms(r.tick(ctx)))
				next = append(next, ms(r.tick(ctx)))
			}
			med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
			o, bd := med(ord), med(bound)
			b.ReportMetric(o, "ordinary-ms")
			b.ReportMetric(bd, "boundary-ms")
			b.ReportMetric(med(next), "next-ms")
			b.ReportMetric(bd/o, "boundary/ordinary")
			b.ReportMetric(testutil.ToFloat64(r.a.metrics.historyErrors), "unacked")
		})
	}
}
