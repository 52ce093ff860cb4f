package collector

import (
	"math"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// rebucket converts a source histogram into Meridian's latency buckets
// (proto.LatencyBounds, per-bucket counts).
//
// upper are the source's bucket upper bounds, ascending (+Inf may be last or
// absent), and cumulative their cumulative counts, as Prometheus exposes them;
// count is the histogram's total count (the +Inf bucket).
//
// Error bound. Every source bucket (lo, hi] is counted whole in the Meridian
// bucket holding hi. A request's true latency is in (lo, hi], so it lands in
// its true bucket or a higher one, and never in one whose lower bound is at or
// above hi: a percentile read from the result over-estimates the true one by
// at most the width of the source bucket it falls in, and never
// under-estimates it. Where every Meridian bound is also a source bound (e.g.
// a source using Prometheus' default buckets, as Caddy and Traefik do), the
// conversion is exact.
func rebucket(upper []time.Duration, cumulative []uint64, count uint64) []uint64 {
	out := make([]uint64, proto.NumLatencyBuckets)
	var prev uint64
	for i, hi := range upper {
		c := cumulative[i]
		if c < prev { // not cumulative: a broken exposition; keep monotonic
			c = prev
		}
		out[proto.LatencyBucket(hi)] += c - prev
		prev = c
	}
	if count > prev {
		out[proto.NumLatencyBuckets-1] += count - prev
	}
	return out
}

// boundToDuration converts a bucket bound in unit to a Duration; +Inf and
// values beyond the representable range become the largest Duration.
func boundToDuration(v float64, unit time.Duration) time.Duration {
	f := v * float64(unit)
	if math.IsInf(v, 1) || f >= math.MaxInt64 {
		return math.MaxInt64
	}
	if f <= 0 || math.IsNaN(f) {
		return 0
	}
	return time.Duration(math.Round(f))
}
