package aggregator

import (
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

func TestBookClaimsEachSecondOnce(t *testing.T) {
	b := newBook()
	claim := func(s sn) (bool, bool) {
		x := s.snap()
		return b.claim(&x)
	}
	for _, tc := range []struct {
		s             sn
		claimed, held bool
	}{
		{sn{at: 1, total: 10, count: 10}, true, false},
		{sn{at: 1, total: 11, count: 11}, false, false}, // the same second again
		{sn{at: 0, total: 9, count: 9}, false, false},   // an older one
		{sn{at: 2, total: 12, count: 12}, true, false},
		{sn{at: 2, total: 12, count: 12, scope: proto.RegionScope("eu")}, true, false}, // scopes are apart
		{sn{at: 3, total: 11, count: 11}, true, true},                                  // lower counters are held
		{sn{at: 4, total: 13, errs: 1, count: 13}, true, false},
	} {
		claimed, held := claim(tc.s)
		if claimed != tc.claimed || held != tc.held {
			t.Errorf("claim(%+v) = %v, %v; want %v, %v", tc.s, claimed, held, tc.claimed, tc.held)
		}
	}

	// A held snapshot publishes the last counters, all of them together.
	x := sn{at: 5, total: 20, errs: 10, sumMs: 1, count: 12, active: 7}.snap()
	if claimed, held := b.claim(&x); !claimed || !held {
		t.Fatalf("fewer durations counted than published: claimed %v, held %v", claimed, held)
	}
	if x.RequestsTotal != 13 || x.RequestsError != 1 || x.RequestsSuccess != 12 || x.DurationCount != 13 ||
		x.ActiveConnections != 7 || x.SuccessRate != proto.SuccessRateOf(12, 13) {
		t.Fatalf("held snapshot = %+v", x)
	}
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}

	// The floor from a restored state covers every scope.
	b.publishedThrough(minute0.Unix() + 10)
	for _, s := range []sn{{at: 10}, {at: 9, scope: proto.InstanceScope("new")}} {
		if claimed, _ := claim(s); claimed {
			t.Errorf("claimed %+v below the floor", s)
		}
	}
	if claimed, _ := claim(sn{at: 11, total: 13, errs: 1, count: 13}); !claimed {
		t.Error("second above the floor refused")
	}
}

func TestBookRollsUpClosedMinutes(t *testing.T) {
	b := newBook()
	add := func(ss ...sn) {
		for _, s := range ss {
			x := s.snap()
			if claimed, _ := b.claim(&x); !claimed {
				t.Fatalf("claim %+v refused", s)
			}
		}
	}
	take := func() []proto.Snapshot { return takeAll(b) }

	add(sn{at: 0, total: 1, count: 1, sumMs: 10, active: 2}, sn{at: 30, total: 3, count: 3, sumMs: 30, active: 4})
	b.close(minute0.Add(59 * time.Second))
	if got := take(); len(got) != 0 {
		t.Fatalf("minute rolled up before it ended: %+v", got)
	}
	add(sn{at: 59, total: 5, count: 5, sumMs: 50, active: 6}, sn{at: 60, total: 6, count: 6, sumMs: 160, active: 1})
	b.close(minute0.Add(60 * time.Second))
	got := take()
	want, _ := Rollup(minute0, nil, snaps(sn{at: 0, total: 1, count: 1, sumMs: 10, active: 2},
		sn{at: 30, total: 3, count: 3, sumMs: 30, active: 4}, sn{at: 59, total: 5, count: 5, sumMs: 50, active: 6}))
	if len(got) != 1 || got[0] != want {
		t.Fatalf("rollups = %+v, want [%+v]", got, want)
	}
	if take() != nil {
		t.Fatal("taken rollups are pending again")
	}

	// The next minute's mean response time starts from the last snapshot of
	// this one: 1 request of 110 ms.
	add(sn{at: 119, total: 6, count: 6, sumMs: 160, active: 1})
	b.close(minute0.Add(125 * time.Second))
	got = take()
	if len(got) != 1 || got[0].Time != minute0.Add(time.Minute) || got[0].AvgResponseTimeMs != 110 {
		t.Fatalf("second minute = %+v", got)
	}

	// A snapshot for a closed minute still counts as published, but is too
	// late for its rollup.
	if x := (sn{at: 121, total: 7, count: 7}).snap(); !func() bool { c, _ := b.claim(&x); return c }() {
		t.Fatal("late second refused")
	}
}

func TestBookPendingUntilSeenPublished(t *testing.T) {
	b := newBook()
	x := sn{at: 5, total: 1, count: 1}.snap()
	b.claim(&x)
	y := sn{at: 65, total: 2, count: 2}.snap()
	b.claim(&y)
	b.close(minute0.Add(2 * time.Minute)) // closes both minutes on a follower

	// Another leader published the first minute's rollup.
	r, _ := Rollup(minute0, nil, []proto.Snapshot{x})
	b.rolledUp(&r)
	got := takeAll(b)
	if len(got) != 1 || got[0].Time != minute0.Add(time.Minute) {
		t.Fatalf("pending after the first was seen published: %+v", got)
	}

	// A follower forgets unpublished rollups after pendingKeep, and scopes
	// without snapshots after scopeKeep.
	z := sn{at: 125, total: 3, count: 3}.snap()
	b.claim(&z)
	b.close(minute0.Add(3 * time.Minute))
	b.close(minute0.Add(3*time.Minute + pendingKeep))
	if got := takeAll(b); len(got) != 0 {
		t.Fatalf("rollups kept past pendingKeep: %+v", got)
	}
	b.close(minute0.Add(3*time.Minute + scopeKeep))
	if len(b.scopes) != 0 {
		t.Fatalf("%d scopes kept past scopeKeep", len(b.scopes))
	}
}

// takeAll is what the leader does: publish every pending rollup.
func takeAll(b *book) []proto.Snapshot {
	rs := b.appendPending(nil, true)
	for i := range rs {
		b.rolledUp(&rs[i])
	}
	return rs
}

func TestAppendScopeKeyIsScopeString(t *testing.T) {
	for _, sc := range []proto.Scope{proto.ClusterScope(), proto.RegionScope("eu"), proto.InstanceScope("gw-1")} {
		if got := string(appendScopeKey([]byte("x"), sc)[1:]); got != sc.String() {
			t.Errorf("%q, want %q", got, sc.String())
		}
	}
}

// TestBookHandsOverPacedRollups: a follower that saw part of the old
// leader's paced instance rollups published, taking over, hands its writer
// exactly the rest, once, and the cluster and region rollups stay apart.
func TestBookHandsOverPacedRollups(t *testing.T) {
	b := newBook()
	scopes := []proto.Scope{{Kind: proto.ScopeCluster}, proto.RegionScope("eu")}
	for i := range 10 {
		scopes = append(scopes, proto.InstanceScope(string(rune('a'+i))))
	}
	for _, sc := range scopes {
		for at := range 3 {
			x := sn{at: at, total: uint64(at), count: uint64(at), scope: sc}.snap()
			b.claim(&x)
		}
	}
	b.close(minute0.Add(time.Minute))
	// The old leader's writer got the first four instance rollups out.
	for _, sc := range scopes[2:6] {
		b.rolledUp(&proto.Snapshot{Scope: sc, Time: minute0})
	}
	if got := len(b.appendPending(nil, false)); got != 2 {
		t.Fatalf("%d cluster and region rollups pending, want 2", got)
	}
	got := b.takeInstancePending(nil)
	want := map[string]bool{}
	for _, sc := range scopes[6:] {
		want[sc.String()] = true
	}
	if len(got) != len(want) {
		t.Fatalf("took %d instance rollups, want %d", len(got), len(want))
	}
	for _, r := range got {
		if !want[r.Scope.String()] || !r.Time.Equal(minute0) {
			t.Errorf("took %v@%v", r.Scope, r.Time)
		}
	}
	if again := b.takeInstancePending(nil); len(again) != 0 {
		t.Fatalf("took %d instance rollups a second time", len(again))
	}
	if all := b.appendPending(nil, true); len(all) != 2 {
		t.Fatalf("%d rollups pending after the hand-over, want the 2 not yet published", len(all))
	}
}
