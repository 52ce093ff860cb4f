package aggregator

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

func gapSnap(sec int64) proto.Snapshot {
	return proto.Snapshot{
		Version: proto.SnapshotVersion, Scope: proto.ClusterScope(), Time: time.Unix(sec, 0).UTC(),
		RequestsTotal: uint64(10 * sec), RequestsSuccess: uint64(10 * sec), SuccessRate: 100,
	}
}

func TestGapBufferBounds(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	entry := func(sec int64, size int) gapEntry {
		return gapEntry{subject: "s", id: "i", data: make([]byte, size-2), sec: sec}
	}
	t.Run("window drops the oldest and counts them", func(t *testing.T) {
		g := newGapBuffer(10*time.Second, 1<<20)
		for sec := now.Unix() - 20; sec < now.Unix(); sec++ {
			g.add(entry(sec, 10), now)
		}
		if g.len() != 10 || g.droppedTotal() != 10 {
			t.Fatalf("held %d, dropped %d; want the newest 10 held, 10 dropped", g.len(), g.droppedTotal())
		}
		// Taken later, what aged out meanwhile is dropped, not refilled.
		got := g.take(100, now.Add(5*time.Second))
		if len(got) != 5 || got[0].sec != now.Unix()-5 || g.droppedTotal() != 15 {
			t.Fatalf("take 5 s later: %d entries from %d, dropped %d", len(got), got[0].sec, g.droppedTotal())
		}
	})
	t.Run("bytes drop the oldest", func(t *testing.T) {
		g := newGapBuffer(time.Hour, 100)
		for i := range int64(15) {
			g.add(entry(now.Unix()+i, 10), now)
		}
		if g.len() != 10 || g.droppedTotal() != 5 || g.take(1, now)[0].sec != now.Unix()+5 {
			t.Fatalf("held %d, dropped %d; want 10 of 10 bytes held", g.len(), g.droppedTotal())
		}
	})
	t.Run("put back goes first", func(t *testing.T) {
		g := newGapBuffer(time.Hour, 1<<20)
		for i := range int64(6) {
			g.add(entry(now.Unix()+i, 10), now)
		}
		batch := g.take(4, now)
		g.add(entry(now.Unix()+6, 10), now) // published while the batch was out
		g.putBack(batch[2:], now)
		var secs []int64
		for _, e := range g.take(100, now) {
			secs = append(secs, e.sec-now.Unix())
		}
		if want := []int64{2, 3, 4, 5, 6}; len(secs) != len(want) || secs[0] != 2 || secs[4] != 6 {
			t.Fatalf("after put back: %v, want %v", secs, want)
		}
		if g.bytes != 0 {
			t.Fatalf("empty buffer accounts %d bytes", g.bytes)
		}
	})
}

// TestRefillWritesTheGapOnceThroughAnotherOutage: what was published
// live-only reaches the history stream under its snapshot subject, in time
// order, once, never on the live subject; a write that fails mid-way (here:
// the rollup stream is missing) puts the rest back, and the next refill
// completes it; a second aggregator refilling the same seconds stores
// nothing twice.
func TestRefillWritesTheGapOnceThroughAnotherOutage(t *testing.T) {
	_, nc := natstest.StartTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := history.EnsureStream(ctx, js, history.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	var live atomic.Int64
	sub, err := nc.Subscribe(proto.SnapshotSubjectAll, func(*nats.Msg) { live.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	now := time.Now().Truncate(time.Second)
	first := now.Add(-30 * time.Second).Unix()
	fill := func(id string) *Aggregator {
		a, err := New(Config{NATS: nc, Logger: quiet, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		for sec := first; sec < now.Unix(); sec++ {
			s := gapSnap(sec)
			data, err := s.Encode()
			if err != nil {
				t.Fatal(err)
			}
			a.keepLiveOnly(&s, messageID(&s), data)
			if sec == first+9 { // a minute closed: its rollup, mid-way
				r := s
				r.Time = time.Unix(minuteOf(sec), 0).UTC()
				a.keepRollups([]proto.Snapshot{r}, now)
			}
		}
		return a
	}
	a := fill("agg-1")
	var run refillRun
	if err := a.refill(ctx, &run); err == nil || !strings.Contains(err.Error(), "@") {
		t.Fatalf("refill without the rollup stream: %v, want the rollup's write to fail", err)
	}
	if n := a.gap.len(); n != 21 || run.snapshots != 10 {
		t.Fatalf("after the failure: %d held, %d written; want the rollup and the 20 seconds after it held", n, run.snapshots)
	}
	if _, err := history.EnsureRollupStream(ctx, js, history.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := a.refill(ctx, &run); err != nil {
		t.Fatal(err)
	}
	if a.gap.len() != 0 || run.snapshots != 30 || run.rollups != 1 || run.duplicates != 0 ||
		run.from != first || run.to != now.Unix()-1 {
		t.Fatalf("refill run: %+v, held %d", run, a.gap.len())
	}

	b := fill("agg-2")
	var again refillRun
	if err := b.refill(ctx, &again); err != nil {
		t.Fatal(err)
	}
	if again.duplicates != 31 {
		t.Fatalf("a second aggregator's refill of the same seconds: %+v, want all 31 duplicates", again)
	}

	got, err := history.Load(ctx, js, proto.ClusterScope(), time.Unix(first, 0), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 {
		t.Fatalf("history holds %d snapshots of the 30 seconds", len(got))
	}
	for i, s := range got {
		if s.Time.Unix() != first+int64(i) || s.RequestsTotal != uint64(10*(first+int64(i))) {
			t.Fatalf("history[%d] = %s total %d", i, s.Time, s.RequestsTotal)
		}
	}
	rolls, err := history.LoadRange(ctx, js, proto.RollupStream, proto.RollupSubject(proto.ClusterScope()), time.Unix(first-60, 0), time.Time{}, 10)
	if err != nil || len(rolls) != 1 {
		t.Fatalf("rollups: %v, %v; want the one", rolls, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := live.Load(); n != 0 {
		t.Fatalf("live subscribers of the snapshot subjects got %d refilled snapshots, want none", n)
	}
}

func TestRefillWindowValidated(t *testing.T) {
	for _, cfg := range []Config{{RefillWindow: -time.Second}, {RefillWindow: MaxRefillWindow + time.Second}, {RefillBytes: -1}} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Refill") {
			t.Errorf("Validate(%+v) = %v, want an error naming the field", cfg, err)
		}
	}
	if err := (Config{RefillWindow: MaxRefillWindow}).Validate(); err != nil {
		t.Errorf("the largest window: %v", err)
	}
}

// FuzzKeepUnwritten: whatever a failed write's message holds, keeping it for
// the refill never panics, and keeps only messages with a scope@second id,
// snapshots under their refill subject.
func FuzzKeepUnwritten(f *testing.F) {
	f.Add("meridian.snapshot.cluster", "cluster@1700000000")
	f.Add("meridian.rollup.region.eu", "region.eu@1700000040")
	f.Add("meridian.snapshot.", "@")
	f.Add("x", "a@b@c")
	f.Add("meridian.snapshot.instance.i", "instance.i@-9223372036854775808")
	a, err := New(Config{NATS: &nats.Conn{}, Logger: quiet, ID: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, subject, id string) {
		a.gap = newGapBuffer(time.Duration(1<<63-1), 1<<20)
		msg := &nats.Msg{Subject: subject, Data: []byte("{}"), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		a.keepUnwritten(msg)
		for _, e := range a.gap.take(10, time.Unix(0, 0)) {
			if e.id != id || !strings.Contains(id, "@") {
				t.Fatalf("kept %+v from id %q", e, id)
			}
			if !e.rollup && !strings.HasPrefix(e.subject, proto.RefillSubjectPrefix+".") {
				t.Fatalf("snapshot kept for %s", e.subject)
			}
		}
	})
}
