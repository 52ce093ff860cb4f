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
// and 100k instances, each reporting a latency histogram of ~450 buckets, on
// an embedded NATS server (reports merged by hand between ticks, outside the
// timings): the tick at :59 (ordinary-ms), the one at :00 that publishes its
// second's snapshots and then closes the minute (boundary-ms), and the next
// (next-ms), medians over the iterations; unacked is the history writes that
// went out without an ack over the run; queued-bytes/instance the rollup
// queue's memory the boundary added (rollup_queue_bytes / n).
//
// mode=paced is the aggregator as it is: the instance rollups go to the
// paced writer. mode=inline is the baseline, what the tick did before: it
// publishes every instance rollup itself through the snapshots' JetStream
// context and waits for their acks until the next second. ns/op is
// meaningless.
func BenchmarkRollupBoundary(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, mode := range []string{"inline", "paced"} {
			b.Run(fmt.Sprintf("n=%d/mode=%s", n, mode), func(b *testing.B) {
				r := newBurstRig(b, n, DefaultRollupSpread, mode == "paced")
				r.fleet = newSimFleet(n)
				ctx := context.Background()
				minute := t0
				var ord, bound, next []float64
				queued := 0.0
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
				for b.Loop() {
					minute = minute.Add(time.Minute)
					r.now = minute.Add(-2 * time.Second)
					ord = append(ord, ms(r.tick(ctx)))
					if mode == "paced" {
						before := r.a.rollq.size()
						bound = append(bound, ms(r.tick(ctx)))
						queued = max(queued, float64(r.a.rollq.size()-before)/float64(n))
					} else {
						start := time.Now()
						r.tick(ctx)
						r.a.rollq.mu.Lock()
						rolls := r.a.rollq.q
						r.a.rollq.q = nil
						r.a.rollq.mu.Unlock()
						r.a.publishRollups(rolls)
						select {
						case <-r.a.js.PublishAsyncComplete():
						case <-time.After(time.Second - time.Since(start)):
						}
						bound = append(bound, ms(time.Since(start)))
					}
					next = append(next, ms(r.tick(ctx)))
				}
				med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
				b.ReportMetric(med(ord), "ordinary-ms")
				b.ReportMetric(med(bound), "boundary-ms")
				b.ReportMetric(med(next), "next-ms")
				b.ReportMetric(testutil.ToFloat64(r.a.metrics.historyErrors), "unacked")
				if mode == "paced" {
					b.ReportMetric(queued, "queued-bytes/instance")
				}
			})
		}
	}
}
