package aggregator

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// t0 is a whole second, so that "at" offsets map onto ticks exactly.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// rp describes a report compactly: cumulative totals of one boot.
type rp struct {
	inst, region, boot string
	seq                uint64
	total, errs        uint64
	durMs              uint64 // cumulative response time in ms over all requests
	active             int64
	final              bool
	interval           time.Duration // default 1s
	start              time.Time     // the boot's start; default an hour before t0
}

func (r rp) report(at time.Time) proto.Report {
	iv := r.interval
	if iv == 0 {
		iv = time.Second
	}
	start := r.start
	if start.IsZero() {
		start = t0.Add(-time.Hour)
	}
	buckets := make([]uint64, proto.NumLatencyBuckets)
	buckets[0] = r.total / 2
	buckets[proto.NumLatencyBuckets-1] = r.total - r.total/2
	return proto.Report{
		Version:   proto.ReportVersion,
		Instance:  r.inst,
		Region:    r.region,
		BootID:    r.boot,
		Seq:       r.seq,
		Time:      at,
		StartTime: start,
		Interval:  iv,
		Final:     r.final,
		Counters: proto.Counters{
			RequestsTotal:     r.total,
			RequestsSuccess:   r.total - r.errs,
			RequestsError:     r.errs,
			DurationSumNanos:  r.durMs * uint64(time.Millisecond),
			DurationCount:     r.total,
			LatencyBuckets:    buckets,
			ActiveConnections: r.active,
		},
	}
}

// exp is what a scope's snapshot must show; absent means no snapshot at all.
type exp struct {
	total, errs uint64
	active      int64
	instances   int
	avgMs       float64
	absent      bool
}

// step is one thing that happens at second at: a report applied half a
// second after the tick (want is its outcome), or a check of the snapshots at
// the tick.
type step struct {
	at    int
	apply *rp
	want  Outcome
	check map[string]exp // by scope string
}

func apply(at int, r rp, want Outcome) step { return step{at: at, apply: &r, want: want} }
func check(at int, c map[string]exp) step   { return step{at: at, check: c} }

// runSteps drives a Merger like the aggregator does: a Snapshots call on
// every second boundary, reports in between.
func runSteps(t *testing.T, cfg MergerConfig, steps []step) *Merger {
	t.Helper()
	m := NewMerger(cfg)
	last := -1
	tickTo := func(sec int) []proto.Snapshot {
		var snaps []proto.Snapshot
		for s := last + 1; s <= sec; s++ {
			snaps = m.Snapshots(t0.Add(time.Duration(s) * time.Second))
			checkInvariants(t, m, snaps)
		}
		last = max(last, sec)
		return snaps
	}
	for i, st := range steps {
		if st.apply != nil {
			tickTo(st.at)
			at := t0.Add(time.Duration(st.at)*time.Second + 500*time.Millisecond)
			if got := m.Apply(st.apply.report(at), at); got != st.want {
				t.Fatalf("step %d: Apply(%+v) = %v, want %v", i, *st.apply, got, st.want)
			}
			continue
		}
		tickTo(st.at - 1)
		snaps := m.Snapshots(t0.Add(time.Duration(st.at) * time.Second))
		checkInvariants(t, m, snaps)
		last = max(last, st.at)
		for scope, want := range st.check {
			s, ok := find(snaps, scope)
			if want.absent {
				if ok {
					t.Errorf("step %d at %ds: %s present, want absent: %+v", i, st.at, scope, s)
				}
				continue
			}
			if !ok {
				t.Errorf("step %d at %ds: no snapshot for %s", i, st.at, scope)
				continue
			}
			got := exp{total: s.RequestsTotal, errs: s.RequestsError, active: s.ActiveConnections,
				instances: s.Instances, avgMs: math.Round(s.AvgResponseTimeMs*1000) / 1000}
			if got != want {
				t.Errorf("step %d at %ds: %s = %+v, want %+v", i, st.at, scope, got, want)
			}
			if !s.Time.Equal(t0.Add(time.Duration(st.at) * time.Second)) {
				t.Errorf("step %d: %s time %v", i, scope, s.Time)
			}
			if wantRate := proto.SuccessRateOf(s.RequestsTotal-s.RequestsError, s.RequestsTotal); s.SuccessRate != wantRate {
				t.Errorf("step %d: %s success rate %v, want %v", i, scope, s.SuccessRate, wantRate)
			}
		}
	}
	return m
}

func find(snaps []proto.Snapshot, scope string) (proto.Snapshot, bool) {
	for _, s := range snaps {
		if s.Scope.String() == scope {
			return s, true
		}
	}
	return proto.Snapshot{}, false
}

// checkInvariants holds after every tick: every snapshot valid, the cluster
// first, regions never above the cluster, and the merge's running totals
// consistent with the instances still tracked.
func checkInvariants(t testing.TB, m *Merger, snaps []proto.Snapshot) {
	t.Helper()
	if m.InvalidSnapshots() != 0 {
		t.Fatalf("%d invalid snapshots", m.InvalidSnapshots())
	}
	if len(snaps) == 0 || snaps[0].Scope != proto.ClusterScope() {
		t.Fatalf("first snapshot is not the cluster's: %+v", snaps)
	}
	c := snaps[0]
	var regionSum, instSum uint64
	for i := range snaps {
		s := &snaps[i]
		if err := s.Validate(); err != nil {
			t.Fatalf("snapshot %s: %v", s.Scope, err)
		}
		switch s.Scope.Kind {
		case proto.ScopeRegion:
			regionSum += s.RequestsTotal
		case proto.ScopeInstance:
			instSum += s.RequestsTotal
		}
	}
	if regionSum > c.RequestsTotal {
		t.Fatalf("regions sum to %d > cluster %d", regionSum, c.RequestsTotal)
	}
	if instSum > c.RequestsTotal {
		t.Fatalf("instances sum to %d > cluster %d", instSum, c.RequestsTotal)
	}
}

func TestMergeTable(t *testing.T) {
	a1 := func(seq, total, errs, durMs uint64) rp {
		return rp{inst: "gw-a", region: "eu", boot: "a1", seq: seq, total: total, errs: errs, durMs: durMs}
	}
	b1 := func(seq, total, errs, durMs uint64) rp {
		return rp{inst: "gw-b", region: "us", boot: "b1", seq: seq, total: total, errs: errs, durMs: durMs}
	}
	withActive := func(r rp, n int64) rp { r.active = n; return r }
	withBoot := func(r rp, boot string) rp { r.boot = boot; return r }
	withRegion := func(r rp, region string) rp { r.region = region; return r }
	final := func(r rp) rp { r.final = true; return r }

	tests := []struct {
		name  string
		cfg   MergerConfig
		steps []step
	}{
		{
			name: "no instances: cluster only, success rate 100",
			steps: []step{
				check(0, map[string]exp{"cluster": {}}),
				check(5, map[string]exp{"cluster": {}, "region.eu": {absent: true}}),
			},
		},
		{
			name: "accumulates two instances in two regions",
			steps: []step{
				apply(0, withActive(a1(1, 100, 10, 1000), 3), OutcomeNewInstance),
				apply(0, withActive(b1(1, 50, 0, 500), 4), OutcomeNewInstance),
				check(1, map[string]exp{
					"cluster":       {total: 150, errs: 10, active: 7, instances: 2, avgMs: 10},
					"region.eu":     {total: 100, errs: 10, active: 3, instances: 1, avgMs: 10},
					"region.us":     {total: 50, active: 4, instances: 1, avgMs: 10},
					"instance.gw-a": {total: 100, errs: 10, active: 3, instances: 1, avgMs: 10},
					"instance.gw-b": {total: 50, active: 4, instances: 1, avgMs: 10},
				}),
				apply(1, withActive(a1(2, 300, 20, 3000), 1), OutcomeApplied),
				apply(1, b1(2, 60, 5, 600), OutcomeApplied),
				check(2, map[string]exp{
					"cluster":   {total: 360, errs: 25, active: 1, instances: 2, avgMs: 10},
					"region.eu": {total: 300, errs: 20, active: 1, instances: 1, avgMs: 10},
					"region.us": {total: 60, errs: 5, active: 0, instances: 1, avgMs: 10},
				}),
			},
		},
		{
			name: "restart with a new boot id adds to the totals; late report of the old boot is a duplicate",
			steps: []step{
				apply(0, a1(1, 100, 10, 100), OutcomeNewInstance),
				apply(1, a1(2, 150, 10, 150), OutcomeApplied),
				apply(2, withBoot(a1(1, 20, 2, 20), "a2"), OutcomeResetBoot),
				check(3, map[string]exp{
					"cluster":       {total: 170, errs: 12, instances: 1, avgMs: 1},
					"instance.gw-a": {total: 170, errs: 12, instances: 1, avgMs: 1},
				}),
				apply(3, a1(3, 160, 11, 160), OutcomeDuplicate), // old boot, arriving late
				apply(3, withBoot(a1(2, 30, 2, 30), "a2"), OutcomeApplied),
				check(4, map[string]exp{"cluster": {total: 180, errs: 12, instances: 1, avgMs: 1}}),
			},
		},
		{
			name: "counter decrease without a boot change is a reset",
			steps: []step{
				apply(0, a1(1, 100, 0, 100), OutcomeNewInstance),
				apply(1, a1(2, 40, 0, 40), OutcomeResetDecrease),
				check(2, map[string]exp{"cluster": {total: 140, instances: 1, avgMs: 1}}),
				apply(2, a1(3, 50, 1, 50), OutcomeApplied),
				check(3, map[string]exp{
					"cluster":       {total: 150, errs: 1, instances: 1, avgMs: 1},
					"region.eu":     {total: 150, errs: 1, instances: 1, avgMs: 1},
					"instance.gw-a": {total: 150, errs: 1, instances: 1, avgMs: 1},
				}),
			},
		},
		{
			name: "duplicate and out-of-order reports change nothing",
			steps: []step{
				apply(0, a1(1, 10, 0, 10), OutcomeNewInstance),
				apply(0, a1(3, 30, 3, 30), OutcomeApplied),
				apply(0, a1(2, 20, 2, 20), OutcomeDuplicate),
				apply(0, a1(3, 30, 3, 30), OutcomeDuplicate),
				apply(0, a1(3, 999, 9, 999), OutcomeDuplicate), // same seq, other figures: still ignored
				apply(0, a1(1, 10, 0, 10), OutcomeDuplicate),
				check(1, map[string]exp{"cluster": {total: 30, errs: 3, instances: 1, avgMs: 1}}),
			},
		},
		{
			name: "a lost report costs nothing",
			steps: []step{
				apply(0, a1(1, 10, 1, 10), OutcomeNewInstance),
				// seq 2 (total 20) never arrives
				apply(1, a1(3, 35, 4, 35), OutcomeApplied),
				check(2, map[string]exp{"cluster": {total: 35, errs: 4, instances: 1, avgMs: 1}}),
			},
		},
		{
			name: "a silent instance leaves the gauges after 3 intervals but its counts stay",
			steps: []step{
				apply(0, withActive(a1(1, 100, 0, 100), 5), OutcomeNewInstance),
				apply(0, withActive(b1(1, 10, 0, 10), 2), OutcomeNewInstance),
				apply(2, withActive(b1(2, 20, 0, 20), 2), OutcomeApplied),
				// a last reported at 0.5s; at 3s it is 2.5s old: live.
				check(3, map[string]exp{"cluster": {total: 120, active: 7, instances: 2, avgMs: 1}}),
				apply(3, withActive(b1(3, 30, 0, 30), 2), OutcomeApplied),
				// at 4s it is 3.5s old: stale.
				check(4, map[string]exp{
					"cluster":       {total: 130, active: 2, instances: 1, avgMs: 1},
					"region.eu":     {total: 100, active: 0, instances: 0, avgMs: 1},
					"instance.gw-a": {total: 100, active: 0, instances: 0, avgMs: 1},
				}),
			},
		},
		{
			name: "return after expiry with the same boot adds only the new requests",
			steps: []step{
				apply(0, withActive(a1(1, 100, 5, 100), 1), OutcomeNewInstance),
				check(6, map[string]exp{"cluster": {total: 100, errs: 5, active: 0, instances: 0, avgMs: 1}}),
				apply(6, withActive(a1(2, 130, 6, 130), 2), OutcomeApplied),
				check(7, map[string]exp{
					"cluster":       {total: 130, errs: 6, active: 2, instances: 1, avgMs: 1},
					"instance.gw-a": {total: 130, errs: 6, active: 2, instances: 1, avgMs: 1},
				}),
			},
		},
		{
			name: "the staleness default follows the instance's own interval",
			steps: []step{
				apply(0, rp{inst: "slow", region: "eu", boot: "s", seq: 1, total: 1, durMs: 1, active: 1, interval: 10 * time.Second}, OutcomeNewInstance),
				check(30, map[string]exp{"cluster": {total: 1, active: 1, instances: 1}}),
				check(31, map[string]exp{"cluster": {total: 1, active: 0, instances: 0}}),
			},
		},
		{
			name: "StaleAfter overrides the per-instance default",
			cfg:  MergerConfig{StaleAfter: 10 * time.Second},
			steps: []step{
				apply(0, withActive(a1(1, 1, 0, 1), 1), OutcomeNewInstance),
				check(10, map[string]exp{"cluster": {total: 1, active: 1, instances: 1, avgMs: 1}}),
				check(11, map[string]exp{"cluster": {total: 1, active: 0, instances: 0}}),
			},
		},
		{
			name: "a final report leaves the gauges at once, counts stay; the next boot is live",
			steps: []step{
				apply(0, withActive(a1(1, 50, 0, 50), 4), OutcomeNewInstance),
				apply(0, final(a1(2, 60, 0, 60)), OutcomeApplied),
				check(1, map[string]exp{
					"cluster":       {total: 60, instances: 0, avgMs: 1},
					"instance.gw-a": {total: 60, instances: 0, avgMs: 1},
				}),
				apply(1, withActive(withBoot(a1(1, 5, 0, 5), "a2"), 1), OutcomeResetBoot),
				check(2, map[string]exp{"cluster": {total: 65, active: 1, instances: 1, avgMs: 1}}),
			},
		},
		{
			name: "moving region keeps both regions monotonic",
			steps: []step{
				apply(0, a1(1, 100, 0, 100), OutcomeNewInstance),
				apply(1, withRegion(a1(2, 150, 0, 150), "us"), OutcomeApplied),
				check(2, map[string]exp{
					"cluster":       {total: 150, instances: 1, avgMs: 1},
					"region.eu":     {total: 100, instances: 0, avgMs: 1},
					"region.us":     {total: 50, instances: 1, avgMs: 1},
					"instance.gw-a": {total: 150, instances: 1, avgMs: 1},
				}),
			},
		},
		{
			name: "forgotten instances and regions keep their counts in the cluster; a return counts its boot again",
			cfg:  MergerConfig{ForgetAfter: time.Minute},
			steps: []step{
				apply(0, a1(1, 100, 0, 100), OutcomeNewInstance),
				check(60, map[string]exp{"instance.gw-a": {total: 100}, "region.eu": {total: 100}}),
				check(61, map[string]exp{
					"cluster":       {total: 100},
					"region.eu":     {absent: true},
					"instance.gw-a": {absent: true},
				}),
				apply(61, a1(2, 110, 0, 110), OutcomeNewInstance),
				check(62, map[string]exp{
					"cluster":       {total: 210, instances: 1, avgMs: 1}, // the documented double count
					"region.eu":     {total: 110, instances: 1, avgMs: 1},
					"instance.gw-a": {total: 110, instances: 1, avgMs: 1},
				}),
			},
		},
		{
			name: "invalid reports are rejected",
			steps: []step{
				apply(0, rp{inst: "bad name", region: "eu", boot: "x", seq: 1}, OutcomeRejected),
				apply(0, rp{inst: "gw", region: "eu", boot: "x", seq: 0}, OutcomeRejected),
				check(1, map[string]exp{"cluster": {}, "instance.gw": {absent: true}}),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runSteps(t, tt.cfg, tt.steps) })
	}
}

func TestWindowAverageIsSumOverCount(t *testing.T) {
	// gw-a serves 1000 fast requests (10ms), gw-b 10 slow ones (1s) in the
	// same second. The true mean is Σduration/Σcount = 20000ms/1010.
	steps := []step{
		apply(0, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1}, OutcomeNewInstance),
		apply(0, rp{inst: "gw-b", region: "eu", boot: "b", seq: 1}, OutcomeNewInstance),
		apply(1, rp{inst: "gw-a", region: "eu", boot: "a", seq: 2, total: 1000, durMs: 10000}, OutcomeApplied),
		apply(1, rp{inst: "gw-b", region: "eu", boot: "b", seq: 2, total: 10, durMs: 10000}, OutcomeApplied),
	}
	m := runSteps(t, MergerConfig{}, steps)
	snaps := m.Snapshots(t0.Add(2 * time.Second))
	cluster, _ := find(snaps, "cluster")
	a, _ := find(snaps, "instance.gw-a")
	b, _ := find(snaps, "instance.gw-b")

	want := 20000.0 / 1010
	if math.Abs(cluster.AvgResponseTimeMs-want) > 1e-9 {
		t.Errorf("cluster avg = %v, want Σ/Σ = %v", cluster.AvgResponseTimeMs, want)
	}
	if a.AvgResponseTimeMs != 10 || b.AvgResponseTimeMs != 1000 {
		t.Fatalf("instance avgs = %v, %v; want 10, 1000", a.AvgResponseTimeMs, b.AvgResponseTimeMs)
	}
	avgOfAvgs := (a.AvgResponseTimeMs + b.AvgResponseTimeMs) / 2
	if math.Abs(avgOfAvgs-cluster.AvgResponseTimeMs) < 1 {
		t.Errorf("average of averages %v should differ from Σ/Σ %v", avgOfAvgs, cluster.AvgResponseTimeMs)
	}
}

func TestWindowSlidesOutToZero(t *testing.T) {
	a := func(seq, total, durMs uint64) rp {
		return rp{inst: "gw-a", region: "eu", boot: "a", seq: seq, total: total, durMs: durMs}
	}
	runSteps(t, MergerConfig{AvgWindow: 5 * time.Second}, []step{
		apply(0, a(1, 0, 0), OutcomeNewInstance),
		check(1, map[string]exp{"cluster": {instances: 1}}), // no requests yet: 0
		apply(1, a(2, 10, 100), OutcomeApplied),             // 10ms each, counted in second 2
		apply(3, a(3, 20, 400), OutcomeApplied),             // 30ms each, counted in second 4
		check(4, map[string]exp{"cluster": {total: 20, avgMs: 20, instances: 1}}),
		// Window of 5s at 6: (1, 6] still holds both.
		check(6, map[string]exp{"cluster": {total: 20, avgMs: 20, instances: 1}}),
		// At 7 the sample of second 2 is the base: only the slow batch remains.
		check(7, map[string]exp{"cluster": {total: 20, avgMs: 30}}),
		// At 9 the base is second 4: nothing in the window.
		check(9, map[string]exp{"cluster": {total: 20, avgMs: 0}, "instance.gw-a": {total: 20, avgMs: 0}}),
	})
}

func TestWindowAfterMissedTicks(t *testing.T) {
	w := newWindow(10, 0, 0)
	if got := w.observe(100, 0, 0, 10); got != 0 {
		t.Fatalf("empty window = %v", got)
	}
	// 40s without a tick: the only base is the sample of 100s.
	if got := w.observe(140, 4e6, 2, 10); got != 2 {
		t.Fatalf("after a gap = %v, want 2", got)
	}
	// The clock steps back: the window restarts and shows 0 until the next tick.
	if got := w.observe(120, 6e6, 3, 10); got != 0 {
		t.Fatalf("after a step back = %v, want 0", got)
	}
	if got := w.observe(121, 9e6, 4, 10); got != 3 {
		t.Fatalf("after restart = %v, want 3", got)
	}
	// Ticks 0..5, then none until 12: the base is the newest sample at or
	// before 12−10 = 2, not the oldest one the ring still holds.
	w = newWindow(10, 0, 0)
	for i := range uint64(6) {
		w.observe(int64(i), i*i*1e6, i, 10)
	}
	if got := w.observe(12, 144e6, 12, 10); got != 14 {
		t.Fatalf("after skipped ticks = %v, want (144−4)/(12−2) = 14", got)
	}
	// A wrapped duration sum still yields the right difference.
	w = newWindow(10, math.MaxUint64-1e6+1, 10)
	if got := w.observe(1, 1e6, 11, 10); got != 2 {
		t.Fatalf("across wrap = %v, want 2", got)
	}
}

func TestRejectsCounterOverflow(t *testing.T) {
	// No rate bound, so that the overflow rule alone is tested.
	m := NewMerger(MergerConfig{MaxRequestRate: math.MaxInt64})
	now := t0
	big := rp{inst: "a", region: "eu", boot: "x", seq: 1, total: math.MaxUint64 - 5}.report(now)
	if got := m.Apply(big, now); got != OutcomeNewInstance {
		t.Fatalf("first = %v", got)
	}
	more := rp{inst: "b", region: "eu", boot: "y", seq: 1, total: 10}.report(now)
	if got := m.Apply(more, now); got != OutcomeRejected || m.LastRejection() != RejectOverflow {
		t.Fatalf("overflowing report = %v (%v), want rejected (overflow)", got, m.LastRejection())
	}
	s := m.Snapshots(now)
	if s[0].RequestsTotal != math.MaxUint64-5 || m.Len() != 1 {
		t.Fatalf("state changed by a rejected report: %+v, %d instances", s[0], m.Len())
	}
}

func TestStateRoundTrip(t *testing.T) {
	steps := []step{
		apply(0, rp{inst: "gw-a", region: "eu", boot: "a1", seq: 1, total: 100, errs: 3, durMs: 500, active: 2}, OutcomeNewInstance),
		apply(0, rp{inst: "gw-b", region: "us", boot: "b1", seq: 1, total: 7, durMs: 70}, OutcomeNewInstance),
		apply(1, rp{inst: "gw-a", region: "eu", boot: "a2", seq: 1, total: 5, durMs: 50}, OutcomeResetBoot),
		apply(2, rp{inst: "gw-b", region: "eu", boot: "b1", seq: 2, total: 9, errs: 1, durMs: 90}, OutcomeApplied),
		apply(3, rp{inst: "gw-b", region: "eu", boot: "b1", seq: 3, total: 9, errs: 1, durMs: 90, final: true}, OutcomeApplied),
	}
	src := runSteps(t, MergerConfig{}, steps)
	data, err := json.Marshal(src.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	dst := NewMerger(MergerConfig{})
	if err := dst.Restore(st); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(dst.State())
	if string(again) != string(data) {
		t.Fatalf("state changed in the round trip:\n%s\n%s", data, again)
	}
	// Both continue identically: same snapshots, same outcomes.
	for sec := 4; sec < 16; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		r := rp{inst: "gw-a", region: "eu", boot: "a2", seq: uint64(sec), total: uint64(sec * 10), durMs: uint64(sec * 30)}.report(now)
		if o1, o2 := src.Apply(r, now), dst.Apply(r, now); o1 != o2 {
			t.Fatalf("second %d: outcomes %v vs %v", sec, o1, o2)
		}
		s1, s2 := src.Snapshots(now), dst.Snapshots(now)
		if fmt.Sprint(s1) != fmt.Sprint(s2) {
			t.Fatalf("second %d: snapshots differ:\n%v\n%v", sec, s1, s2)
		}
		if sec == 4 && s1[0].RequestsTotal != 100+40+9 {
			t.Fatalf("cluster total %d, want 149", s1[0].RequestsTotal)
		}
	}
}

func TestRestoreWithoutWindowRestartsTheWindow(t *testing.T) {
	src := runSteps(t, MergerConfig{}, []step{
		apply(0, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 100, durMs: 100000}, OutcomeNewInstance),
	})
	st := src.State()
	st.Window, st.Regions[0].Window, st.Instances[0].Window = nil, nil, nil
	dst := NewMerger(MergerConfig{})
	if err := dst.Restore(st); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Second)
	dst.Apply(rp{inst: "gw-a", region: "eu", boot: "a", seq: 2, total: 101, durMs: 100002}.report(now), now)
	s := dst.Snapshots(now)
	if s[0].AvgResponseTimeMs != 2 || s[0].RequestsTotal != 101 {
		t.Fatalf("avg after restore = %v (total %d), want 2: only requests since the restore", s[0].AvgResponseTimeMs, s[0].RequestsTotal)
	}
}

func TestRestoreRejectsInvalidState(t *testing.T) {
	good := func() State {
		m := runSteps(t, MergerConfig{}, []step{
			apply(0, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 10, errs: 1, durMs: 10}, OutcomeNewInstance),
		})
		return m.State()
	}
	tests := []struct {
		name   string
		mutate func(*State)
	}{
		{"version", func(s *State) { s.Version = 2 }},
		{"cluster totals", func(s *State) { s.Totals.RequestsError++ }},
		{"unknown region", func(s *State) { s.Instances[0].Region = "mars" }},
		{"duplicate instance", func(s *State) { s.Instances = append(s.Instances, s.Instances[0]) }},
		{"duplicate region", func(s *State) { s.Regions = append(s.Regions, s.Regions[0]) }},
		{"bad instance name", func(s *State) { s.Instances[0].Instance = "a.b" }},
		{"buckets", func(s *State) { s.Instances[0].LatencyBuckets = nil }},
		{"seq", func(s *State) { s.Instances[0].Seq = 0 }},
		{"instance above cluster", func(s *State) { s.Instances[0].Offsets = Totals{RequestsTotal: 5, RequestsSuccess: 5} }},
		{"region above cluster", func(s *State) { s.Regions[0].Totals = Totals{RequestsTotal: 11, RequestsSuccess: 11} }},
		{"window order", func(s *State) { s.Window = []WindowSample{{Time: 2}, {Time: 1}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMerger(MergerConfig{})
			m.Apply(rp{inst: "keep", region: "eu", boot: "k", seq: 1, total: 1}.report(t0), t0)
			s := good()
			tt.mutate(&s)
			err := m.Restore(s)
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("Restore = %v, want ErrInvalidState", err)
			}
			if m.Len() != 1 {
				t.Fatalf("merger changed by a failed Restore")
			}
		})
	}
}

func TestInstanceStatus(t *testing.T) {
	m := NewMerger(MergerConfig{})
	m.Apply(rp{inst: "gw-b", region: "us", boot: "b", seq: 1, total: 4, errs: 1, durMs: 8, active: 3}.report(t0), t0)
	m.Apply(rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 9}.report(t0), t0)
	m.Apply(rp{inst: "gw-b", region: "us", boot: "b2", seq: 1, total: 2, durMs: 4}.report(t0), t0.Add(time.Second))
	st := m.AppendInstanceStatus(nil, t0.Add(3*time.Second+500*time.Millisecond))
	if len(st) != 2 || st[0].Instance != "gw-a" || st[1].Instance != "gw-b" {
		t.Fatalf("status = %+v", st)
	}
	b := st[1]
	if b.Counters.RequestsTotal != 2 || b.BootID != "b2" || b.Region != "us" || !b.Up || !b.LastReport.Equal(t0.Add(time.Second)) {
		t.Errorf("gw-b = %+v: want the raw counters of the current boot, live", b)
	}
	if st[0].Up {
		t.Errorf("gw-a is 3.5s silent but up")
	}
}
