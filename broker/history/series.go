package history

import (
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Series downsamples snaps (oldest first) covering [start, end] into at
// most points Points for metric m. Buckets are equal steps of whole seconds,
// aligned to multiples of the step since the Unix epoch so that series from
// different requests line up; each point is stamped with its bucket's start.
// Empty buckets produce no point. Rules per kind of metric:
//   - counters (requests_*): the last value in the bucket;
//   - gauges (active_connections): the mean over the bucket;
//   - avg_response_time: Σduration/Σcount of the requests in the bucket, from
//     the cumulative sums at the bucket's end and the previous bucket's end
//     (0 when the bucket saw no requests);
//   - success_rate: from the cumulative totals at the bucket's end, the same
//     definition as the live value;
//   - the latency quantiles (latency_*_ms): the quantile of the merged
//     histogram of the requests of the bucket, from the histograms each
//     snapshot carries for its own tick (or minute, for rollups); 0 when the
//     bucket saw none.
func Series(snaps []proto.Snapshot, m proto.Metric, start, end time.Time, points int) []proto.Point {
	if points <= 0 {
		return []proto.Point{}
	}
	out := SeriesStep(snaps, m, start, end, StepFor(end.Sub(start), points))
	if len(out) > points {
		// Aligned buckets can straddle both ends of the range: drop the oldest.
		out = out[len(out)-points:]
	}
	return out
}

// StepFor is the smallest whole-second step that covers span in at most
// points buckets (at least 1 s).
func StepFor(span time.Duration, points int) time.Duration {
	if points <= 0 || span <= 0 {
		return time.Second
	}
	step := time.Duration((int64(span)/int64(points) + int64(time.Second) - 1) / int64(time.Second) * int64(time.Second))
	return max(step, time.Second)
}

// SeriesStep is Series with an explicit bucket step (whole seconds, at
// least 1 s), for callers such as the REST API that are given a step.
func SeriesStep(snaps []proto.Snapshot, m proto.Metric, start, end time.Time, step time.Duration) []proto.Point {
	step = max(step.Truncate(time.Second), time.Second)
	if len(snaps) == 0 || end.Before(start) {
		return []proto.Point{}
	}
	out := make([]proto.Point, 0, min(int(end.Sub(start)/step)+2, len(snaps)))
	var prev *proto.Snapshot // last snapshot before the current bucket
	var scratch *proto.DenseHist
	i := 0
	for i < len(snaps) && snaps[i].Time.Before(start) {
		prev = &snaps[i]
		i++
	}
	for i < len(snaps) {
		if snaps[i].Time.After(end) {
			break
		}
		bucket := snaps[i].Time.Truncate(step)
		next := bucket.Add(step)
		j := i
		var gaugeSum float64
		for j < len(snaps) && snaps[j].Time.Before(next) && !snaps[j].Time.After(end) {
			gaugeSum += snaps[j].Value(m)
			j++
		}
		if q, ok := latencyQuantile(m); ok {
			out = append(out, proto.Point{Time: bucket, Value: bucketQuantile(snaps[i:j], q, &scratch)})
			prev = &snaps[j-1]
			i = j
			continue
		}
		last := &snaps[j-1]
		var v float64
		switch m {
		case proto.ActiveConnections:
			v = gaugeSum / float64(j-i)
		case proto.AvgResponseTime:
			v = bucketAvg(prev, &snaps[i], last)
		case proto.SuccessRate:
			v = proto.SuccessRateOf(last.RequestsSuccess, last.RequestsTotal)
		default:
			v = last.Value(m)
		}
		out = append(out, proto.Point{Time: bucket, Value: v})
		prev = last
		i = j
	}
	return out
}

// bucketAvg is the mean response time of the requests counted between the
// end of the previous bucket and last, in milliseconds.
func bucketAvg(prev, first, last *proto.Snapshot) float64 {
	base := prev
	if base == nil {
		// Nothing before this bucket: the first snapshot's window average is
		// the best estimate of what preceded it.
		if first == last {
			return first.AvgResponseTimeMs
		}
		base = first
	}
	if last.DurationCount < base.DurationCount {
		return last.AvgResponseTimeMs // history from before a state loss; don't invent a negative
	}
	n := last.DurationCount - base.DurationCount
	if n == 0 {
		return 0
	}
	// The cumulative duration sum is kept modulo 2^64 (it wraps after months
	// of heavy traffic); the unsigned difference is right across a wrap.
	return float64(last.DurationSumNanos-base.DurationSumNanos) / float64(n) / 1e6
}

// latencyQuantile is the quantile a latency metric stands for.
func latencyQuantile(m proto.Metric) (float64, bool) {
	if m < proto.LatencyP50 || m > proto.LatencyMax {
		return 0, false
	}
	return proto.LatencyQuantiles[m-proto.LatencyP50], true
}

// bucketQuantile is the q-quantile, in milliseconds, of the merged
// histograms of snaps. The accumulator is allocated on first use and reused
// for the series' later buckets.
func bucketQuantile(snaps []proto.Snapshot, q float64, scratch **proto.DenseHist) float64 {
	if *scratch == nil {
		*scratch = new(proto.DenseHist)
	}
	d := *scratch
	d.Reset()
	for k := range snaps {
		if h := snaps[k].LatencyHistogram; h != nil {
			d.Add(h)
		}
	}
	var v [1]float64
	d.Quantiles([]float64{q}, v[:])
	return v[0]
}
