package history

import "github.com/meridian-metrics/meridian/proto"

// Downsample is the value of metric m for one bucket of snapshots of a
// scope: first and last are the bucket's oldest and newest snapshot (the
// same one for a bucket of one), prev the newest snapshot before the bucket
// (nil if unknown), and gaugeMean the mean of m over the bucket. It is the
// one rule behind the edge's history series and the aggregator's one-minute
// rollups, by proto.Kind:
//   - counters: the last value;
//   - gauges: gaugeMean;
//   - avg_response_time: Σduration/Σcount of the requests counted in the
//     bucket (MeanResponseMs);
//   - success_rate: from the cumulative totals at the bucket's end, the same
//     definition as the live value.
func Downsample(m proto.Metric, prev, first, last *proto.Snapshot, gaugeMean float64) float64 {
	switch {
	case m.Kind() == proto.KindGauge:
		return gaugeMean
	case m == proto.AvgResponseTime:
		return MeanResponseMs(prev, first, last)
	case m == proto.SuccessRate:
		return proto.SuccessRateOf(last.RequestsSuccess, last.RequestsTotal)
	default:
		return last.Value(m)
	}
}

// MeanResponseMs is the mean response time in milliseconds of the requests
// counted after prev up to last. Without a usable prev (none, or one from
// before a loss of state, whose count is above last's) the difference is
// taken from first; a bucket of one snapshot then has only that snapshot's
// own sliding-window mean. 0 when no request was counted.
func MeanResponseMs(prev, first, last *proto.Snapshot) float64 {
	base := prev
	if base == nil || base.DurationCount > last.DurationCount {
		if first == last || first.Time.Equal(last.Time) {
			return first.AvgResponseTimeMs
		}
		base = first
	}
	if base.DurationCount > last.DurationCount {
		return last.AvgResponseTimeMs // counts went down: don't invent a negative
	}
	n := last.DurationCount - base.DurationCount
	if n == 0 {
		return 0
	}
	// The cumulative duration sum is kept modulo 2^64 (it wraps after months
	// of heavy traffic); the unsigned difference is right across a wrap.
	return float64(last.DurationSumNanos-base.DurationSumNanos) / float64(n) / 1e6
}
