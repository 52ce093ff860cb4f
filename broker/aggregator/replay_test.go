package aggregator

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// TestTakeOverReplay plays a failover on Mergers: the old leader applies
// reports and persists its state at some point; a follower buffers every
// report it receives; on take-over it restores the persisted state and
// replays its buffer. Its totals must come out as the old leader's, except
// where noted.
func TestTakeOverReplay(t *testing.T) {
	bootA := t0.Add(-3 * time.Hour)
	bootB := t0.Add(-2 * time.Hour)
	bootC := t0.Add(-time.Hour)
	a := func(seq, total uint64, final bool) rp {
		return rp{inst: "gw-1", region: "eu", boot: "A", start: bootA, seq: seq, total: total, errs: total / 10, durMs: total, final: final}
	}
	b := func(seq, total uint64, final bool) rp {
		return rp{inst: "gw-1", region: "eu", boot: "B", start: bootB, seq: seq, total: total, durMs: 2 * total, final: final}
	}
	c := func(seq, total uint64) rp {
		return rp{inst: "gw-1", region: "eu", boot: "C", start: bootC, seq: seq, total: total, durMs: total}
	}
	other := func(seq, total uint64) rp {
		return rp{inst: "gw-2", region: "us", boot: "X", seq: seq, total: total, durMs: total}
	}

	for _, tc := range []struct {
		name string
		// leader is what the old leader applied, in order; it last
		// persisted its state before leader[persistAt]. follower is what
		// the follower received (nil: the same reports).
		leader    []rp
		persistAt int
		follower  []rp
		// lost is how many requests the new leader misses, by design.
		lost uint64
	}{
		{
			name:      "reports after the last state write",
			leader:    []rp{a(1, 10, false), a(2, 20, false), other(1, 5), a(3, 30, false), other(2, 9)},
			persistAt: 2,
		},
		{
			name:      "graceful gateway restart after the last state write",
			leader:    []rp{a(1, 10, false), a(2, 20, false), a(3, 25, true), b(1, 3, false)},
			persistAt: 2,
		},
		{
			name:      "gateway crash after the last state write",
			leader:    []rp{a(1, 10, false), a(2, 20, false), b(1, 4, false), b(2, 6, false)},
			persistAt: 2,
		},
		{
			name:      "restart already in the state; follower joined late",
			leader:    []rp{a(1, 10, false), a(2, 25, true), b(1, 3, false), b(2, 8, false), other(1, 5)},
			persistAt: 4,
			follower:  []rp{b(2, 8, false), other(1, 5)},
		},
		{
			name:      "duplicated and reordered reports",
			leader:    []rp{a(1, 10, false), a(2, 20, false), a(4, 40, false), b(1, 2, false)},
			persistAt: 2,
			follower:  []rp{a(1, 10, false), a(2, 20, false), a(4, 40, false), a(2, 20, false), a(3, 30, false), b(1, 2, false), a(4, 40, false)},
		},
		{
			name: "a boot the follower missed is in the state: its older boot is not replayed",
			// The follower's buffer ends at boot B (previous A); the state
			// has C (previous B). Replaying A would count it twice.
			leader:    []rp{a(1, 10, false), a(2, 20, true), b(1, 5, false), b(2, 7, true), c(1, 1)},
			persistAt: 5,
			follower:  []rp{a(1, 10, false), a(2, 20, true), b(1, 5, false), b(2, 7, true)},
		},
		{
			name: "two restarts between state writes: the first boot's tail is lost",
			// The buffer keeps two boots per instance; A's last 5 requests
			// after the state are gone with the old leader.
			leader:    []rp{a(1, 10, false), a(2, 15, true), b(1, 5, false), b(2, 7, true), c(1, 1)},
			persistAt: 1,
			lost:      5,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := NewMerger(MergerConfig{})
			var persisted State
			at := t0
			for i, r := range tc.leader {
				if i == tc.persistAt {
					persisted = old.State()
				}
				at = at.Add(100 * time.Millisecond)
				old.Apply(r.report(at), at)
			}
			if tc.persistAt == len(tc.leader) {
				persisted = old.State()
			}
			followerSaw := tc.follower
			if followerSaw == nil {
				followerSaw = tc.leader
			}
			buf := newReplayBuffer()
			hot := NewMerger(MergerConfig{}) // the follower merges hot too
			at = t0
			for _, r := range followerSaw {
				at = at.Add(100 * time.Millisecond)
				hot.Apply(r.report(at), at)
				buf.add(r.report(at), at)
			}

			if err := hot.Restore(persisted); err != nil {
				t.Fatal(err)
			}
			st := buf.replay(hot)
			want := old.cluster.totals
			want.RequestsTotal -= tc.lost
			got := hot.cluster.totals
			if got.RequestsTotal != want.RequestsTotal {
				t.Fatalf("new leader's total %d, want %d (old leader %d); replay %+v",
					got.RequestsTotal, want.RequestsTotal, old.cluster.totals.RequestsTotal, st)
			}
			if tc.lost == 0 && got != want {
				t.Fatalf("new leader's totals %+v, want %+v", got, want)
			}
			// Replaying again changes nothing: everything is a duplicate.
			buf.replay(hot)
			if hot.cluster.totals != got {
				t.Fatalf("a second replay changed the totals to %+v", hot.cluster.totals)
			}
		})
	}
}

func TestReplayBufferKeepsTwoBoots(t *testing.T) {
	buf := newReplayBuffer()
	add := func(r rp) { buf.add(r.report(t0), t0) }
	boot := func(name string, start time.Time, seq uint64) rp {
		return rp{inst: "gw-1", region: "eu", boot: name, start: start, seq: seq, total: seq}
	}
	a, b, c := t0.Add(-3*time.Hour), t0.Add(-2*time.Hour), t0.Add(-time.Hour)
	add(boot("A", a, 2))
	add(boot("A", a, 1)) // older report of the same boot: ignored
	add(boot("B", b, 1))
	add(boot("A", a, 3)) // late report of the previous boot: kept as its newest
	e := buf.insts["gw-1"]
	if e.prev.r.BootID != "A" || e.prev.r.Seq != 3 || e.cur.r.BootID != "B" {
		t.Fatalf("after A, B and a late A: prev %s/%d, cur %s/%d", e.prev.r.BootID, e.prev.r.Seq, e.cur.r.BootID, e.cur.r.Seq)
	}
	add(boot("Z", a.Add(-time.Hour), 9)) // a boot older than both: ignored
	add(boot("C", c, 1))
	if e.prev.r.BootID != "B" || e.cur.r.BootID != "C" || buf.len() != 2 {
		t.Fatalf("after C: prev %s, cur %s, len %d", e.prev.r.BootID, e.cur.r.BootID, buf.len())
	}
	add(rp{inst: "gw-2", region: "us", boot: "X", seq: 1, total: 1})
	buf.prune(t0.Add(DefaultForgetAfter), DefaultForgetAfter)
	if buf.len() != 3 {
		t.Fatalf("pruned at the limit: len %d", buf.len())
	}
	buf.prune(t0.Add(DefaultForgetAfter+time.Second), DefaultForgetAfter)
	if buf.len() != 0 {
		t.Fatalf("kept %d reports past ForgetAfter", buf.len())
	}
}

// The buffer keeps a report's histogram (packed) and none of the report's
// arrays: replayed into a merger without latency state, the last report
// sets the instance's baseline to exactly its histogram, even though the
// report's own histogram was a decoder's and was overwritten since.
func TestReplayKeepsHistograms(t *testing.T) {
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	g.serve(logNormal(rand.New(rand.NewPCG(3, 3)), 40, 1, 500)...)
	r := g.report(t0)
	want := r.LatencyHistogram.Clone()
	buf := newReplayBuffer()
	buf.add(r, t0)
	for i := range r.LatencyHistogram.Buckets { // the decoder reuses its array
		r.LatencyHistogram.Buckets[i] = proto.HistBucket{}
	}
	r.LatencyBuckets[0]++
	m := NewMerger(MergerConfig{})
	if st := buf.replay(m); st.applied != 1 {
		t.Fatalf("replay %+v", st)
	}
	in := m.insts["gw-1"]
	if !in.histKnown || !slices.Equal(in.hist.Buckets, want.Buckets) || in.hist.Over != want.Over {
		t.Fatalf("baseline %v, want %v", in.hist, want)
	}
	if in.buckets[0] == r.LatencyBuckets[0] {
		t.Fatal("the buffer shares the report's latency buckets")
	}
}
