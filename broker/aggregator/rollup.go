package aggregator

import (
	"math"
	"time"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// RollupPeriod is the span one rollup covers.
const RollupPeriod = time.Minute

// Rollup computes the one-minute rollup of a scope from the scope's
// per-second snapshots. minute is the start of the minute (truncated to
// RollupPeriod); snaps are the scope's snapshots, oldest first: those outside
// [minute, minute+1m) or of another scope than the first one inside are
// ignored. prev is the scope's newest snapshot before the minute, or nil when
// unknown. It returns false when no snapshot falls in the minute.
//
// The rollup is a proto.Snapshot of the same scope with Time = minute, and
// its fields follow the per-kind rules that history.Series uses for its
// buckets:
//   - the cumulative counters (requests_*, the duration sum and count) are
//     the minute's last values;
//   - the gauges (active_connections, instances) are the mean over the
//     minute's snapshots, rounded;
//   - avg_response_time is Σduration/Σcount of the requests counted in the
//     minute: the change of the cumulative sums since prev (since the
//     minute's first snapshot without prev; the first snapshot's own window
//     mean when it is the only one), 0 when none were counted;
//   - success_rate is computed from the last totals, as live;
//   - the latency histogram is the merge of the minute's tick histograms (the
//     requests of the minute) and the latency quantiles are read from it.
//
// Rollup is pure; it is the slice form of the incremental builder the
// aggregator runs on the live snapshots.
func Rollup(minute time.Time, prev *proto.Snapshot, snaps []proto.Snapshot) (proto.Snapshot, bool) {
	start := minute.Truncate(RollupPeriod).Unix()
	var b *rollupBuilder
	for i := range snaps {
		s := &snaps[i]
		if minuteOf(s.Time.Unix()) != start {
			continue
		}
		if b == nil {
			b = newRollupBuilder(start, s)
			continue
		}
		if s.Scope != b.first.Scope || !s.Time.After(b.last.Time) {
			continue
		}
		b.add(s)
	}
	if b == nil {
		return proto.Snapshot{}, false
	}
	return b.result(prev), true
}

// minuteOf is the start of the minute holding unix second sec.
func minuteOf(sec int64) int64 {
	const p = int64(RollupPeriod / time.Second)
	m := sec - sec%p
	if sec%p < 0 {
		m -= p
	}
	return m
}

// rollupBuilder accumulates one scope's minute, one snapshot at a time, in
// constant space.
type rollupBuilder struct {
	minute       int64 // unix seconds of the minute's start
	n            int
	first, last  proto.Snapshot
	activeSum    float64 // float: 60 int64 gauges could overflow an int64 sum
	instancesSum float64
	latency      proto.Histogram // merged tick histograms, sparse; owns its buckets
}

func newRollupBuilder(minute int64, s *proto.Snapshot) *rollupBuilder {
	b := &rollupBuilder{minute: minute}
	b.start(s)
	return b
}

// start takes the minute's first snapshot.
func (b *rollupBuilder) start(s *proto.Snapshot) {
	b.first = *s
	b.first.LatencyHistogram = nil // merged into latency; kept, it would hold the tick's buckets for a minute
	b.add(s)
}

// add takes the next snapshot of the minute; callers pass them in time order.
func (b *rollupBuilder) add(s *proto.Snapshot) {
	b.n++
	b.last = *s
	b.last.LatencyHistogram = nil
	b.activeSum += float64(s.ActiveConnections)
	b.instancesSum += float64(s.Instances)
	if s.LatencyHistogram != nil {
		// In place: a tick per second and scope, at every instance, would
		// otherwise allocate the minute's whole histogram each time.
		b.latency.AddInPlace(s.LatencyHistogram)
	}
}

// result is the rollup, given the scope's newest snapshot before the minute.
func (b *rollupBuilder) result(prev *proto.Snapshot) proto.Snapshot {
	last := &b.last
	r := proto.Snapshot{
		Version:           proto.SnapshotVersion,
		Scope:             b.first.Scope,
		Time:              time.Unix(b.minute, 0).UTC(),
		RequestsTotal:     last.RequestsTotal,
		RequestsSuccess:   last.RequestsSuccess,
		RequestsError:     last.RequestsError,
		ActiveConnections: int64(roundedMean(b.activeSum, b.n, math.MaxInt64)),
		AvgResponseTimeMs: history.Downsample(proto.AvgResponseTime, prev, &b.first, last, 0),
		SuccessRate:       history.Downsample(proto.SuccessRate, prev, &b.first, last, 0),
		DurationSumNanos:  last.DurationSumNanos,
		DurationCount:     last.DurationCount,
		Instances:         int(roundedMean(b.instancesSum, b.n, math.MaxInt)),
	}
	if len(b.latency.Buckets) > 0 {
		h := b.latency.Clone()
		r.LatencyHistogram = &h
		h.Quantiles(proto.LatencyQuantiles[:], r.LatencyMs[:])
	}
	return r
}

// roundedMean is sum/n rounded, capped at limit (a float64 near MaxInt64
// does not convert back exactly).
func roundedMean(sum float64, n int, limit float64) float64 {
	m := math.Round(sum / float64(n))
	if m >= limit {
		return math.Nextafter(limit, 0)
	}
	return m
}
