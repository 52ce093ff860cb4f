package aggregator_test

import (
	"fmt"
	"time"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/proto"
)

func report(instance, region, boot string, seq, total, errs uint64, durSum time.Duration, at time.Time) proto.Report {
	return proto.Report{
		Version: proto.ReportVersion, Instance: instance, Region: region, BootID: boot, Seq: seq,
		Time: at, StartTime: at, Interval: time.Second,
		Counters: proto.Counters{
			RequestsTotal: total, RequestsSuccess: total - errs, RequestsError: errs,
			DurationSumNanos: uint64(durSum), DurationCount: total,
			LatencyBuckets: make([]uint64, proto.NumLatencyBuckets),
		},
	}
}

// A gateway restart (new boot id) adds to the cluster's counters instead of
// resetting them, and the mean response time is Σduration/Σcount.
func ExampleMerger() {
	m := aggregator.NewMerger(aggregator.MergerConfig{})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	fmt.Println(m.Apply(report("gw-1", "eu", "boot-1", 1, 100, 5, 2*time.Second, now), now))
	fmt.Println(m.Apply(report("gw-2", "us", "boot-1", 1, 300, 0, 3*time.Second, now), now))
	fmt.Println(m.Apply(report("gw-1", "eu", "boot-2", 1, 10, 0, 100*time.Millisecond, now), now))
	fmt.Println(m.Apply(report("gw-1", "eu", "boot-2", 1, 10, 0, 100*time.Millisecond, now), now))

	for _, s := range m.Snapshots(now) {
		fmt.Printf("%-13s total=%d errors=%d instances=%d avg=%.2fms success=%.2f%%\n",
			s.Scope, s.RequestsTotal, s.RequestsError, s.Instances, s.AvgResponseTimeMs, s.SuccessRate)
	}
	// Output:
	// new_instance
	// new_instance
	// reset_boot
	// duplicate
	// cluster       total=410 errors=5 instances=2 avg=12.44ms success=98.78%
	// region.eu     total=110 errors=5 instances=1 avg=19.09ms success=95.45%
	// region.us     total=300 errors=0 instances=1 avg=10.00ms success=100.00%
	// instance.gw-1 total=110 errors=5 instances=1 avg=19.09ms success=95.45%
	// instance.gw-2 total=300 errors=0 instances=1 avg=10.00ms success=100.00%
}

// A minute's rollup from its per-second snapshots: counters are the last
// values, gauges the mean, and the mean response time covers exactly the
// requests counted in the minute.
func ExampleRollup() {
	minute := time.Date(2025, 1, 1, 12, 30, 0, 0, time.UTC)
	snap := func(sec int, total, errs uint64, sum time.Duration, active int64) proto.Snapshot {
		return proto.Snapshot{
			Version: proto.SnapshotVersion, Scope: proto.ClusterScope(), Time: minute.Add(time.Duration(sec) * time.Second),
			RequestsTotal: total, RequestsSuccess: total - errs, RequestsError: errs,
			DurationSumNanos: uint64(sum), DurationCount: total, ActiveConnections: active,
			SuccessRate: proto.SuccessRateOf(total-errs, total),
		}
	}
	prev := snap(-1, 1000, 10, 10*time.Second, 3) // the last second of the minute before
	r, _ := aggregator.Rollup(minute, &prev, []proto.Snapshot{
		snap(0, 1100, 10, 12*time.Second, 4),
		snap(30, 1500, 20, 20*time.Second, 8),
		snap(59, 1600, 20, 22*time.Second, 7),
	})
	fmt.Printf("%s %s total=%d errors=%d active=%d avg=%.0fms success=%.2f%%\n",
		r.Time.Format("15:04"), r.Scope, r.RequestsTotal, r.RequestsError, r.ActiveConnections, r.AvgResponseTimeMs, r.SuccessRate)
	// Output:
	// 12:30 cluster total=1600 errors=20 active=6 avg=20ms success=98.75%
}
