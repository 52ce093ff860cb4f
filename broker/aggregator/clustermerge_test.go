package aggregator

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// tierGW is a gateway instance with random traffic, restarts and counter
// resets, for comparing the tiers.
type tierGW struct {
	inst, region, boot string
	start              time.Time
	seq, total, errs   uint64
	sum                uint64
	active             int64
	hist               proto.DenseHist
	last               proto.Report
	final              bool
}

func (g *tierGW) serve(rng *rand.Rand, n int) {
	for range n {
		d := time.Duration(rng.ExpFloat64()*float64(30*time.Millisecond)) + 200*time.Microsecond
		if rng.IntN(50) == 0 {
			d *= 40 // a slow tail, so that p99 and max differ from p50
		}
		g.hist.Observe(d)
		g.total++
		g.sum += uint64(d)
		if rng.IntN(8) == 0 {
			g.errs++
		}
	}
	g.active = int64(rng.IntN(20))
}

func (g *tierGW) zero() {
	g.total, g.errs, g.sum = 0, 0, 0
	g.hist.Reset()
}

func (g *tierGW) report(at time.Time, final bool) proto.Report {
	g.seq++
	r := rp{inst: g.inst, region: g.region, boot: g.boot, seq: g.seq, total: g.total, errs: g.errs, active: g.active, final: final, start: g.start}.report(at)
	r.DurationSumNanos = g.sum
	h := g.hist.AppendSparse(nil)
	r.LatencyHistogram = &h
	g.last, g.final = r, final
	return r
}

// regionShards is a set of region shards: one Merger per region set.
type regionShards struct {
	of     map[string]*Merger // region → its shard's merger
	shards []*Merger
}

func newRegionShards(cfg MergerConfig, sets ...[]string) *regionShards {
	rs := &regionShards{of: map[string]*Merger{}}
	for _, set := range sets {
		m := NewMerger(cfg)
		rs.shards = append(rs.shards, m)
		for _, r := range set {
			rs.of[r] = m
		}
	}
	return rs
}

// wire passes a snapshot through its wire form, as NATS carries it.
func wire(t testing.TB, s proto.Snapshot) proto.Snapshot {
	t.Helper()
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := proto.DecodeSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func encoded(t testing.TB, s proto.Snapshot) []byte {
	t.Helper()
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestClusterTierEqualsSingleTier feeds the same random report streams —
// three regions in two shards, restarts, counter resets, duplicates, final
// reports, silent instances, an instance moving between two regions of a
// shard, skipped ticks, regions forgotten — to one single-tier Merger and to
// region shard Mergers whose region snapshots (through their wire form)
// feed a ClusterMerger, and requires the cluster snapshot of every second
// to be byte for byte the single tier's: counters, gauges, the window's
// avg_response_time and latency percentiles, the tick's histogram. Halfway,
// a hot follower ClusterMerger takes over with the leader's persisted state.
func TestClusterTierEqualsSingleTier(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { compareTiers(t, seed) })
	}
}

func compareTiers(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 13))
	cfg := MergerConfig{ForgetAfter: 25 * time.Second, AvgWindow: 5 * time.Second}
	single := NewMerger(cfg)
	shards := newRegionShards(cfg, []string{"eu", "us"}, []string{"ap"})
	leader, follower := NewClusterMerger(cfg), NewClusterMerger(cfg)

	var gws []*tierGW
	for _, region := range []string{"eu", "us", "ap"} {
		for i := range 3 {
			gws = append(gws, &tierGW{inst: fmt.Sprintf("gw-%s-%d", region, i), region: region, boot: "b0", start: t0.Add(-time.Hour)})
		}
	}
	apply := func(r proto.Report, at time.Time) {
		if a, b := single.Apply(r, at), shards.of[r.Region].Apply(r, at); a != b {
			t.Fatalf("report %s seq %d: single tier %v, shard %v", r.Instance, r.Seq, a, b)
		}
	}
	const seconds = 90
	for sec := range seconds {
		at := t0.Add(time.Duration(sec)*time.Second + 300*time.Millisecond)
		for _, i := range rng.Perm(len(gws)) {
			g := gws[i]
			// The ap region goes silent for a while, long enough to be
			// forgotten, then comes back.
			if g.region == "ap" && sec >= 20 && sec < 50 {
				continue
			}
			if g.region == "ap" && sec == 50 {
				// Back with new boots, as after a day's absence.
				g.boot, g.seq, g.start = fmt.Sprintf("b%d", sec), 0, at
				g.zero()
			}
			switch p := rng.IntN(100); {
			case p < 4:
				g.boot, g.seq, g.start = fmt.Sprintf("b%d", sec), 0, at
				g.zero()
			case p < 6:
				g.zero() // same boot, counters restart: a reset by decrease
			case p < 8 && g.inst == "gw-eu-2":
				g.region = map[string]string{"eu": "us", "us": "eu"}[g.region] // moves within its shard
			}
			g.serve(rng, rng.IntN(40))
			switch p := rng.IntN(100); {
			case p < 15: // silent this second
			case p < 25 && g.last.Seq != 0:
				apply(g.last, at) // a duplicate
			case p < 27:
				apply(g.report(at, true), at) // graceful stop, then a new boot
				g.boot, g.seq, g.start = fmt.Sprintf("b%d-final", sec), 0, at
				g.zero()
			default:
				apply(g.report(at, false), at)
			}
		}
		if rng.IntN(12) == 0 {
			continue // a tick missed by every tier alike
		}
		now := t0.Add(time.Duration(sec+1)*time.Second + 5*time.Millisecond)
		want := single.Snapshots(now)
		for _, m := range shards.shards {
			for _, s := range m.Snapshots(now) {
				if s.Scope.Kind != proto.ScopeRegion {
					continue
				}
				if w := mustFind(t, want, s.Scope.String()); !bytes.Equal(encoded(t, w), encoded(t, s)) {
					t.Fatalf("second %d %s: shard\n%s\nsingle tier\n%s", sec, s.Scope, encoded(t, s), encoded(t, w))
				}
				for _, cm := range []*ClusterMerger{leader, follower} {
					ws := wire(t, s)
					if out := cm.Add(&ws, now); out != RegionApplied && out != RegionNewLife {
						t.Fatalf("second %d: Add %s: %v", sec, s.Scope, out)
					}
				}
			}
		}
		got := leader.AppendSnapshots(nil, now)
		follower.AppendSnapshots(nil, now)
		if len(got) != 1 || got[0].Scope != proto.ClusterScope() {
			t.Fatalf("second %d: cluster tier returned %v", sec, got)
		}
		if w, g := encoded(t, want[0]), encoded(t, got[0]); !bytes.Equal(w, g) {
			t.Fatalf("second %d: cluster tier\n%s\nsingle tier\n%s", sec, g, w)
		}
		if sec == seconds/2 {
			// The leader dies; its follower takes over with its last state.
			if err := follower.Restore(leader.State()); err != nil {
				t.Fatal(err)
			}
			leader, follower = follower, NewClusterMerger(cfg)
		}
	}
	if single.cluster.totals.RequestsTotal == 0 || single.cluster.lat.n == 0 {
		t.Fatal("the streams counted nothing")
	}
}

// TestClusterMergerHoldsAndOrders: a region never moves back, in time or in
// counters, and a missing region holds the second back until it publishes.
func TestClusterMergerHoldsAndOrders(t *testing.T) {
	cm := NewClusterMerger(MergerConfig{})
	snap := func(region string, sec int, total uint64) proto.Snapshot {
		return proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.RegionScope(region), Time: t0.Add(time.Duration(sec) * time.Second),
			RequestsTotal: total, RequestsSuccess: total, SuccessRate: 100, DurationCount: total, Instances: 1}
	}
	now := t0.Add(10 * time.Millisecond)
	for _, c := range []struct {
		s    proto.Snapshot
		want RegionOutcome
	}{
		{snap("eu", 0, 10), RegionApplied},
		{snap("us", 0, 5), RegionApplied},
		{snap("eu", 0, 11), RegionOld},
		{snap("eu", 1, 3), RegionHeld},
		{proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.ClusterScope(), Time: t0}, RegionRejected},
	} {
		if got := cm.Add(&c.s, now); got != c.want {
			t.Errorf("Add %s@%d total %d: %v, want %v", c.s.Scope, c.s.Time.Unix(), c.s.RequestsTotal, got, c.want)
		}
	}
	s := cm.AppendSnapshots(nil, now)[0]
	if s.RequestsTotal != 15 || s.Instances != 2 {
		t.Errorf("cluster total %d instances %d, want 15 and 2", s.RequestsTotal, s.Instances)
	}
	next := t0.Add(time.Second + 10*time.Millisecond)
	if cm.Complete(next) {
		t.Error("complete at second 1 while us has not published it")
	}
	us := snap("us", 1, 6)
	cm.Add(&us, next)
	if !cm.Complete(next) {
		t.Error("not complete at second 1 once every region published it")
	}
	// us goes silent: after StaleAfter it no longer holds seconds back and
	// its gauges leave, its counters stay.
	later := t0.Add(5*time.Second + 10*time.Millisecond)
	eu := snap("eu", 5, 12)
	cm.Add(&eu, later)
	if !cm.Complete(later) {
		t.Error("a silent region still holds seconds back")
	}
	if s := cm.AppendSnapshots(nil, later)[0]; s.RequestsTotal != 18 || s.Instances != 1 {
		t.Errorf("with us silent: total %d instances %d, want 18 and 1", s.RequestsTotal, s.Instances)
	}
}

// TestClusterMergerRestore: a restarted cluster tier counts a region whose
// shard is down from the persisted state, and refuses another tier's state.
func TestClusterMergerRestore(t *testing.T) {
	cm := NewClusterMerger(MergerConfig{})
	for i, region := range []string{"eu", "us"} {
		s := proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.RegionScope(region), Time: t0,
			RequestsTotal: uint64(10 * (i + 1)), RequestsError: uint64(10 * (i + 1)), DurationCount: 7}
		cm.Add(&s, t0)
	}
	cm.AppendSnapshots(nil, t0)
	data, err := EncodeState(new(cm.State()))
	if err != nil {
		t.Fatal(err)
	}
	st, err := DecodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	restarted := NewClusterMerger(MergerConfig{})
	if err := restarted.Restore(st); err != nil {
		t.Fatal(err)
	}
	eu := proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.RegionScope("eu"), Time: t0.Add(time.Second), RequestsTotal: 11, RequestsError: 11, DurationCount: 8}
	restarted.Add(&eu, t0.Add(time.Second))
	if s := restarted.AppendSnapshots(nil, t0.Add(time.Second))[0]; s.RequestsTotal != 31 || s.DurationCount != 15 {
		t.Errorf("after restore: total %d duration count %d, want 31 and 15", s.RequestsTotal, s.DurationCount)
	}

	m := NewMerger(MergerConfig{})
	m.Apply(rp{inst: "gw-1", region: "eu", boot: "b", seq: 1, total: 3}.report(t0), t0)
	if err := restarted.Restore(m.State()); !errors.Is(err, ErrInvalidState) {
		t.Errorf("Restore of a single-tier state: %v, want ErrInvalidState", err)
	}
	bad := cm.State()
	bad.Totals.RequestsTotal--
	bad.Totals.RequestsError--
	if err := restarted.Restore(bad); !errors.Is(err, ErrInvalidState) {
		t.Errorf("Restore of totals below the regions' sum: %v, want ErrInvalidState", err)
	}
}
