package proto

import "time"

// LatencyBounds are the upper bounds (inclusive) of the gateway latency
// histogram buckets. They are fixed by the protocol so that histograms from
// every instance merge by adding bucket counts; the last bucket (+Inf) is
// implicit. They match Prometheus' default buckets, in seconds.
var LatencyBounds = [...]time.Duration{
	5 * time.Millisecond,
	10 * time.Millisecond,
	25 * time.Millisecond,
	50 * time.Millisecond,
	100 * time.Millisecond,
	250 * time.Millisecond,
	500 * time.Millisecond,
	1 * time.Second,
	2500 * time.Millisecond,
	5 * time.Second,
	10 * time.Second,
}

// NumLatencyBuckets is len(LatencyBounds)+1: the last bucket is +Inf.
const NumLatencyBuckets = len(LatencyBounds) + 1

// LatencyBucket returns the index of the bucket d falls into.
func LatencyBucket(d time.Duration) int {
	// Linear: 11 predictable comparisons beat a binary search's branch misses.
	for i, b := range LatencyBounds {
		if d <= b {
			return i
		}
	}
	return len(LatencyBounds)
}
