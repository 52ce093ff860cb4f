package collector

import (
	"slices"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// A resumed collector's reports carry the histogram of everything counted:
// the checkpoint's plus the new recorder's.
func TestAddCountersMergesTheHistogram(t *testing.T) {
	hist := func(ds ...time.Duration) *proto.Histogram {
		var d proto.DenseHist
		for _, v := range ds {
			d.Observe(v)
		}
		h := d.AppendSparse(nil)
		return &h
	}
	base := proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets), LatencyHistogram: hist(time.Millisecond, time.Second)}
	c := proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets), LatencyHistogram: hist(time.Second, 3*time.Millisecond)}
	got := addCounters(base, c)
	want := hist(time.Millisecond, time.Second, time.Second, 3*time.Millisecond)
	if got.LatencyHistogram == nil || !slices.Equal(got.LatencyHistogram.Buckets, want.Buckets) {
		t.Fatalf("histogram %+v, want %+v", got.LatencyHistogram, want)
	}
	if got := addCounters(proto.Counters{}, c); got.LatencyHistogram == nil || got.LatencyHistogram.Count() != 2 {
		t.Fatalf("without a checkpointed histogram: %+v", got.LatencyHistogram)
	}
}
