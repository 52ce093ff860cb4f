//go:build linux

package edge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/proto"
)

func rfc3339(t time.Time) string { return string(proto.AppendTimestamp(nil, t)) }

// expectReplay reads n Snapshot events and checks they are exactly want's
// timestamps and requests_total, in order, with the given fields.
func expectReplay(t *testing.T, c *client, want []proto.Snapshot, fields string) {
	t.Helper()
	for i, s := range want {
		ev, raw := c.event(5 * time.Second)
		if ev.Type != proto.EventSnapshot {
			t.Fatalf("replay event %d: got %v, want Snapshot %v", i, raw, s.Time)
		}
		if !ev.Timestamp.Equal(s.Time) || ev.Values["requests_total"] != float64(s.RequestsTotal) {
			t.Fatalf("replay event %d: %v, want time %v requests_total %d", i, raw, s.Time, s.RequestsTotal)
		}
		if got := keys(raw); got != fields {
			t.Fatalf("replay event %d: fields %s, want %s", i, got, fields)
		}
	}
}

// since replays exactly the snapshots after it, oldest first, after the
// TimeSeries and before any live one; then the live cadence continues.
func TestSinceReplaysThenLive(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	end := time.Now().UTC().Truncate(time.Second)
	fine := secondly(proto.ClusterScope(), end, 120, 1)
	store(t, js, fine...)
	te := start(Config{})
	te.publishWait(fine[len(fine)-1])

	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	// No tick for a minute: any Snapshot before the replay would be a
	// live one that overtook it.
	c.sendText(`{"interval_seconds":60}`)
	since := end.Add(-30 * time.Second)
	c.sendText(`{"metrics":["requests_total"],"include_history":true,"history_seconds":60,"since":"` + rfc3339(since) + `"}`)
	if ev, raw := c.event(5 * time.Second); ev.Type != proto.EventTimeSeries || ev.MetricName != "requests_total" {
		t.Fatalf("got %v, want the TimeSeries first", raw)
	}
	expectReplay(t, c, fine[len(fine)-30:], allKeys)

	next := snap(end.Add(time.Second), 121)
	te.publishWait(next)
	ev, _ := c.expectEvent(proto.EventSnapshot, 3*time.Second)
	if ev.Timestamp.Equal(end) { // the tick came before the publish: the same newest again
		ev, _ = c.expectEvent(proto.EventSnapshot, 3*time.Second)
	}
	if !ev.Timestamp.Equal(next.Time) {
		t.Fatalf("after the replay: snapshot at %v, want the live one at %v", ev.Timestamp, next.Time)
	}
	if got := testutil.ToFloat64(te.m.replayed); got != 30 {
		t.Errorf("replayed snapshots = %v, want 30", got)
	}

	// A replay for an unknown scope is refused and releases the live
	// snapshots it held back.
	c.sendText(`{"region":"mars","since":"` + rfc3339(since) + `"}`)
	if ev, _ := c.expectEvent(proto.EventError, 3*time.Second); !strings.HasPrefix(ev.Message, "unknown scope region.mars") {
		t.Fatalf("error %q", ev.Message)
	}
	c.expectEvent(proto.EventSnapshot, 3*time.Second)
}

// With since on the upgrade URL the replay takes the first snapshot's
// place: nothing live precedes it.
func TestSinceFromURL(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	end := time.Now().UTC().Truncate(time.Second)
	cluster := secondly(proto.ClusterScope(), end, 60, 1)
	eu := secondly(regionEU, end, 60, 5000)
	store(t, js, cluster...)
	store(t, js, eu...) // region eu: known from history only
	te := start(Config{})
	te.publishWait(cluster[len(cluster)-1])
	since := end.Add(-10 * time.Second)
	for _, tt := range []struct {
		query string
		want  []proto.Snapshot
	}{
		{"?since=" + rfc3339(since), cluster[50:]},
		{"?region=eu&since=" + rfc3339(since), eu[50:]},
		{"?since=" + rfc3339(end), nil}, // nothing after it: live from the start
	} {
		c := dial(t, te.url+tt.query)
		expectReplay(t, c, tt.want, allKeys)
		ev, _ := c.expectEvent(proto.EventSnapshot, 3*time.Second)
		if !ev.Timestamp.Equal(end) {
			t.Errorf("%s: live snapshot at %v after the replay, want %v", tt.query, ev.Timestamp, end)
		}
	}
}

// Replays reach back beyond the in-memory window through the history
// stream, and are cut to MaxReplaySnapshots, newest kept, with a notice.
func TestReplayRangesAndTruncation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		window    time.Duration
		max       int
		sinceAgo  time.Duration
		want      int // replayed: the newest want of the 300 stored
		truncated bool
	}{
		{"within the ring", time.Hour, 3600, 100 * time.Second, 100, false},
		{"beyond the ring", time.Minute, 3600, 200 * time.Second, 200, false},
		{"before all history", time.Minute, 3600, time.Hour, 300, false},
		{"truncated in the ring", time.Hour, 50, 200 * time.Second, 50, true},
		{"truncated beyond the ring", time.Minute, 50, 200 * time.Second, 50, true},
		{"truncated, found by the probe", time.Minute, 100, 200 * time.Second, 100, true},
		{"cut by the cap, nothing left out", time.Minute, 400, time.Hour, 300, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js, start := startJS(t)
			end := time.Now().UTC().Truncate(time.Second)
			fine := secondly(proto.ClusterScope(), end, 300, 1)
			store(t, js, fine...)
			te := start(Config{HistoryWindow: tt.window, MaxReplaySnapshots: tt.max})
			te.publishWait(fine[len(fine)-1])
			since := end.Add(-tt.sinceAgo)
			c := dial(t, te.url+"?since="+rfc3339(since))
			want := fine[len(fine)-tt.want:]
			if tt.truncated {
				ev, _ := c.expectEvent(proto.EventError, 5*time.Second)
				first := rfc3339(want[0].Time)
				msg := fmt.Sprintf("replay truncated: at most %d snapshots are replayed; the snapshots of cluster after %s and before %s are not replayed, the replay starts at %s",
					tt.max, rfc3339(since), first, first)
				if ev.Message != msg {
					t.Errorf("notice %q,\nwant %q", ev.Message, msg)
				}
			}
			expectReplay(t, c, want, allKeys)
			if got := testutil.ToFloat64(te.m.replaysTruncated); got != map[bool]float64{true: 1}[tt.truncated] {
				t.Errorf("truncated replays = %v", got)
			}
		})
	}
}

// While a replay is pending, the connection's ticks pass without a live
// snapshot; after it, the replay counts as the tick's snapshot.
func TestLiveHeldUntilReplay(t *testing.T) {
	e := bareEdge(t)
	e.scopes.store(snap(time.Now(), 1))
	s := newShard(e)
	conns, drain := tcpConns(t, e, s, 1)
	c := conns[0]
	c.nextSnap = 0
	sub := proto.DefaultSubscription()
	sub.Since = time.Now().Add(-time.Minute)
	c.subscribe(sub) // no workers: stays pending
	sent := testutil.ToFloat64(e.m.msgsSent)
	s.fire(c, everything)
	drain()
	if got := testutil.ToFloat64(e.m.msgsSent) - sent; got != 0 {
		t.Fatalf("%v frames sent while the replay is pending, want none", got)
	}
	c.mu.Lock()
	j := c.work.jobs[0]
	c.work.jobs = nil
	c.applyLocked(&j, &jobResult{})
	c.mu.Unlock()
	c.nextSnap = 0
	s.fire(c, everything)
	drain()
	if got := testutil.ToFloat64(e.m.msgsSent) - sent; got != 1 {
		t.Fatalf("%v frames sent after the replay, want the snapshot", got)
	}
}
