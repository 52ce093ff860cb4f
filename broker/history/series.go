package history

import (
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Series downsamples snaps (oldest first) covering [start, end] into at
// most points Points for metric m. Buckets are equal steps of whole seconds,
// aligned to multiples of the step since the Unix epoch so that series from
// different requests line up; each point is stamped with its bucket's start.
// Empty buckets produce no point. Each point is Downsample of its bucket.
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
		last := &snaps[j-1]
		v := Downsample(m, prev, &snaps[i], last, gaugeSum/float64(j-i))
		out = append(out, proto.Point{Time: bucket, Value: v})
		prev = last
		i = j
	}
	return out
}
