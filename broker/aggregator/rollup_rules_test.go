package aggregator

import (
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// The aggregator's rollup of a minute and the edge's history point for the
// same minute (history.SeriesStep with a 60 s step) follow one rule, so
// they agree on every metric, including the fallbacks: no previous
// snapshot, a previous snapshot from before a loss of state, a bucket of
// one snapshot.
func TestRollupAgreesWithHistorySeries(t *testing.T) {
	before := sn{at: -1, total: 100, errs: 10, sumMs: 1000, count: 100}.snap()
	lost := sn{at: -1, total: 5000, errs: 10, sumMs: 90000, count: 5000}.snap() // above the minute's counts
	minute := snaps(
		sn{at: 0, total: 110, errs: 11, sumMs: 1200, count: 110, active: 4, avg: 9},
		sn{at: 20, total: 150, errs: 12, sumMs: 2000, count: 150, active: 8, avg: 11},
		sn{at: 59, total: 160, errs: 20, sumMs: 2600, count: 160, active: 6, avg: 12},
	)
	one := snaps(sn{at: 30, total: 110, errs: 11, sumMs: 1200, count: 110, active: 4, avg: 9})
	for _, tc := range []struct {
		name string
		prev *proto.Snapshot
		in   []proto.Snapshot
	}{
		{"previous snapshot", &before, minute},
		{"no previous snapshot", nil, minute},
		{"previous from before a state loss", &lost, minute},
		{"one snapshot, no previous", nil, one},
		{"one snapshot after a state loss", &lost, one},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := Rollup(minute0, tc.prev, tc.in)
			if !ok {
				t.Fatal("no rollup")
			}
			withPrev := tc.in
			if tc.prev != nil {
				withPrev = append([]proto.Snapshot{*tc.prev}, tc.in...)
			}
			for _, m := range []proto.Metric{proto.RequestsTotal, proto.RequestsError, proto.AvgResponseTime, proto.SuccessRate} {
				pts := history.SeriesStep(withPrev, m, minute0, minute0.Add(59*time.Second), time.Minute)
				if len(pts) != 1 {
					t.Fatalf("%s: %d points, want 1", m, len(pts))
				}
				if got, want := pts[0].Value, r.Value(m); got != want {
					t.Errorf("%s: history point %v, rollup %v", m, got, want)
				}
			}
		})
	}
}
