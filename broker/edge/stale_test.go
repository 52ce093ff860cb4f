package edge

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// TestStaleDataToldOncePerStall: when live snapshots stop, a client keeps
// its cadence and is told once, with an Error naming the stale snapshot's
// time, and the edge's readiness says so; when they resume and stop again,
// it is told again.
func TestStaleDataToldOncePerStall(t *testing.T) {
	t.Parallel()
	const staleAfter = 2 * time.Second
	te := startEdge(t, Config{StaleAfter: staleAfter})
	first := time.Now().UTC().Truncate(time.Second)
	te.publishWait(snap(first, 10))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)

	// Nothing more is published: the repeats go on and one Error comes.
	stall := func(since time.Time) {
		t.Helper()
		want := "data stale since " + since.Format(time.RFC3339) + ": no newer snapshot of cluster"
		errs, snaps := 0, 0
		deadline := time.Now().Add(staleAfter + 4*time.Second)
		for time.Now().Before(deadline) {
			ev, raw := c.event(2 * time.Second)
			switch ev.Type {
			case proto.EventSnapshot:
				snaps++
			case proto.EventError:
				errs++
				if !strings.HasPrefix(ev.Message, want) {
					t.Fatalf("stale notice %q, want it to start %q", ev.Message, want)
				}
			default:
				t.Fatalf("unexpected event %v", raw)
			}
		}
		if errs != 1 || snaps < 3 {
			t.Fatalf("during a stall of %s: %d Errors and %d Snapshots, want 1 and the cadence", staleAfter+4*time.Second, errs, snaps)
		}
	}
	stall(first)
	if reason, ok := te.Edge.Ready(); ok || !strings.Contains(reason, "data stale since "+first.Format(time.RFC3339)) {
		t.Fatalf("readiness %v %q, want not ready and stale since %s", ok, reason, first.Format(time.RFC3339))
	}

	// Live again, then a second stall: told again.
	second := time.Now().UTC().Truncate(time.Second)
	te.publishWait(snap(second, 20))
	for ev := c.nextSnapshot(3 * time.Second); ev.Values["requests_total"] != 20; ev = c.nextSnapshot(3 * time.Second) {
	}
	stall(second)
}
