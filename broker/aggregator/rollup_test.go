package aggregator

import (
	"math"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// minute0 is a minute boundary for the rollup tests.
var minute0 = time.Date(2025, 3, 1, 12, 7, 0, 0, time.UTC)

// sn is a compact snapshot: second offset from minute0, cumulative total
// and errors, duration sum in ms over count requests, gauges.
type sn struct {
	at          int
	total, errs uint64
	sumMs       uint64
	count       uint64
	active      int64
	instances   int
	avg         float64 // the snapshot's own window mean
	scope       proto.Scope
}

func (s sn) snap() proto.Snapshot {
	return proto.Snapshot{
		Version: proto.SnapshotVersion, Scope: s.scope, Time: minute0.Add(time.Duration(s.at) * time.Second),
		RequestsTotal: s.total, RequestsSuccess: s.total - s.errs, RequestsError: s.errs,
		ActiveConnections: s.active, AvgResponseTimeMs: s.avg,
		SuccessRate:      proto.SuccessRateOf(s.total-s.errs, s.total),
		DurationSumNanos: s.sumMs * uint64(time.Millisecond), DurationCount: s.count, Instances: s.instances,
	}
}

func snaps(ss ...sn) []proto.Snapshot {
	out := make([]proto.Snapshot, len(ss))
	for i, s := range ss {
		out[i] = s.snap()
	}
	return out
}

func TestRollup(t *testing.T) {
	prev := sn{at: -1, total: 100, errs: 10, sumMs: 1000, count: 100}.snap()
	// Cumulative duration sums just below 2^64: the minute's requests wrap it.
	nearWrap := uint64(math.MaxUint64) - uint64(500*time.Millisecond) + 1
	wrapPrev := proto.Snapshot{Version: 1, Time: minute0.Add(-time.Second), DurationSumNanos: nearWrap, DurationCount: 10, SuccessRate: 100}
	wrapLast := proto.Snapshot{Version: 1, Time: minute0.Add(30 * time.Second), DurationSumNanos: nearWrap + uint64(2*time.Second),
		DurationCount: 20, RequestsTotal: 20, RequestsSuccess: 20, ActiveConnections: 1, SuccessRate: 100}

	for _, tc := range []struct {
		name  string
		prev  *proto.Snapshot
		in    []proto.Snapshot
		ok    bool
		want  proto.Snapshot // Version, Scope and Time are filled in
		scope proto.Scope
	}{
		{
			name: "counters are the last values, success rate from them",
			prev: &prev,
			in:   snaps(sn{at: 0, total: 110, errs: 10, sumMs: 1100, count: 110}, sn{at: 59, total: 200, errs: 20, sumMs: 2000, count: 200}),
			ok:   true,
			want: proto.Snapshot{RequestsTotal: 200, RequestsSuccess: 180, RequestsError: 20, SuccessRate: 90,
				DurationSumNanos: 2000 * 1e6, DurationCount: 200, AvgResponseTimeMs: 10},
		},
		{
			name: "gauges are the rounded mean over the minute",
			in: snaps(sn{at: 0, active: 1, instances: 2}, sn{at: 1, active: 2, instances: 2},
				sn{at: 2, active: 2, instances: 3}, sn{at: 3, active: 4, instances: 3}),
			ok:   true,
			want: proto.Snapshot{ActiveConnections: 2, Instances: 3, SuccessRate: 100}, // 9/4 = 2.25, 10/4 = 2.5
		},
		{
			name: "avg is Σduration/Σcount of the minute's requests since prev",
			// 100 requests in the minute took 5000 ms: 50 ms, whatever the
			// window means of the snapshots say.
			prev: &prev,
			in: snaps(sn{at: 10, total: 150, errs: 10, sumMs: 3500, count: 150, avg: 999},
				sn{at: 20, total: 200, errs: 10, sumMs: 6000, count: 200, avg: 1}),
			ok: true,
			want: proto.Snapshot{RequestsTotal: 200, RequestsSuccess: 190, RequestsError: 10, SuccessRate: 95,
				DurationSumNanos: 6000 * 1e6, DurationCount: 200, AvgResponseTimeMs: 50},
		},
		{
			name: "without prev, from the first snapshot of the minute",
			in: snaps(sn{at: 10, total: 150, sumMs: 3500, count: 150, avg: 999},
				sn{at: 20, total: 200, sumMs: 4500, count: 200, avg: 1}),
			ok: true,
			want: proto.Snapshot{RequestsTotal: 200, RequestsSuccess: 200, SuccessRate: 100,
				DurationSumNanos: 4500 * 1e6, DurationCount: 200, AvgResponseTimeMs: 20},
		},
		{
			name: "one snapshot without prev: its own window mean",
			in:   snaps(sn{at: 30, total: 5, sumMs: 50, count: 5, avg: 7.5}),
			ok:   true,
			want: proto.Snapshot{RequestsTotal: 5, RequestsSuccess: 5, SuccessRate: 100,
				DurationSumNanos: 50 * 1e6, DurationCount: 5, AvgResponseTimeMs: 7.5},
		},
		{
			name: "no requests in the minute: 0",
			prev: &prev,
			in:   snaps(sn{at: 5, total: 100, errs: 10, sumMs: 1000, count: 100, avg: 10}),
			ok:   true,
			want: proto.Snapshot{RequestsTotal: 100, RequestsSuccess: 90, RequestsError: 10, SuccessRate: 90,
				DurationSumNanos: 1000 * 1e6, DurationCount: 100},
		},
		{
			name: "a duration sum that wraps within the minute",
			prev: &wrapPrev,
			in:   []proto.Snapshot{wrapLast},
			ok:   true,
			want: proto.Snapshot{RequestsTotal: 20, RequestsSuccess: 20, SuccessRate: 100, ActiveConnections: 1,
				DurationSumNanos: wrapLast.DurationSumNanos, DurationCount: 20, AvgResponseTimeMs: 200},
		},
		{
			name: "prev from before a state loss (higher count) is not used",
			prev: &proto.Snapshot{Version: 1, Time: minute0.Add(-time.Second), DurationSumNanos: 9e12, DurationCount: 9000},
			in: snaps(sn{at: 1, total: 10, sumMs: 100, count: 10, avg: 3},
				sn{at: 2, total: 30, sumMs: 500, count: 30, avg: 4}),
			ok: true,
			want: proto.Snapshot{RequestsTotal: 30, RequestsSuccess: 30, SuccessRate: 100,
				DurationSumNanos: 500 * 1e6, DurationCount: 30, AvgResponseTimeMs: 20},
		},
		{
			name: "snapshots outside the minute and of other scopes are ignored",
			in: snaps(sn{at: -1, total: 1, count: 1, active: 100}, sn{at: 0, total: 2, count: 2, active: 2},
				sn{at: 1, total: 1000, count: 1000, active: 100, scope: proto.RegionScope("eu")},
				sn{at: 59, total: 4, count: 4, active: 4}, sn{at: 60, total: 9, count: 9, active: 100}),
			ok:   true,
			want: proto.Snapshot{RequestsTotal: 4, RequestsSuccess: 4, SuccessRate: 100, DurationCount: 4, ActiveConnections: 3},
		},
		{
			name:  "the rollup keeps the scope",
			in:    snaps(sn{at: 3, total: 1, count: 1, scope: proto.InstanceScope("gw-1")}),
			ok:    true,
			scope: proto.InstanceScope("gw-1"),
			want:  proto.Snapshot{RequestsTotal: 1, RequestsSuccess: 1, SuccessRate: 100, DurationCount: 1},
		},
		{
			name: "nothing in the minute",
			in:   snaps(sn{at: -5}, sn{at: 61}),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Any time within the minute names it.
			got, ok := Rollup(minute0.Add(17*time.Second), tc.prev, tc.in)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			want := tc.want
			want.Version, want.Scope, want.Time = proto.SnapshotVersion, tc.scope, minute0
			if got != want {
				t.Errorf("rollup\n got %+v\nwant %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("rollup does not validate: %v", err)
			}
		})
	}
}

func TestRollupGaugeMeanSaturates(t *testing.T) {
	in := snaps(sn{at: 0, active: math.MaxInt64}, sn{at: 1, active: math.MaxInt64})
	got, ok := Rollup(minute0, nil, in)
	if !ok || got.ActiveConnections <= 0 || got.ActiveConnections < math.MaxInt64-1024 {
		t.Fatalf("mean of two MaxInt64 gauges = %d", got.ActiveConnections)
	}
}

func TestMinuteOf(t *testing.T) {
	for _, tc := range []struct{ sec, want int64 }{
		{0, 0}, {59, 0}, {60, 60}, {61, 60}, {-1, -60}, {-60, -60}, {-61, -120},
		{minute0.Unix() + 59, minute0.Unix()},
	} {
		if got := minuteOf(tc.sec); got != tc.want {
			t.Errorf("minuteOf(%d) = %d, want %d", tc.sec, got, tc.want)
		}
	}
}

// A rollup's latency histogram merges the minute's tick histograms, and its
// quantiles are those of the minute's requests.
func TestRollupLatency(t *testing.T) {
	var all []time.Duration
	var ss []proto.Snapshot
	for sec := range 60 {
		s := sn{at: sec}.snap()
		var dh proto.DenseHist
		for k := range sec % 5 {
			d := time.Duration(2+sec*k) * time.Millisecond
			all = append(all, d)
			dh.Observe(d)
		}
		if dh.Count() > 0 {
			h := dh.AppendSparse(nil)
			s.LatencyHistogram = &h
		}
		ss = append(ss, s)
	}
	r, ok := Rollup(minute0, nil, ss)
	if !ok || r.LatencyHistogram == nil || r.LatencyHistogram.Count() != uint64(len(all)) {
		t.Fatalf("rollup %+v", r)
	}
	checkQuantiles(t, "rollup", r, all)
}
