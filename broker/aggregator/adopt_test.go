package aggregator

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// published is one cluster snapshot seen on NATS, with its publisher.
type published struct {
	from string
	s    proto.Snapshot
}

func watchCluster(t *testing.T, nc *nats.Conn) chan published {
	t.Helper()
	raw := make(chan *nats.Msg, 4096)
	sub, err := nc.ChanSubscribe(proto.SnapshotSubject(proto.ClusterScope()), raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	out := make(chan published, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range raw {
			// The test's forgeries carry no message id; an aggregator's
			// snapshots always do.
			if s, err := proto.DecodeSnapshot(m.Data); err == nil && m.Header.Get(jetstream.MsgIDHeader) != "" {
				out <- published{from: m.Header.Get(PublisherHeader), s: s}
			}
		}
	}()
	t.Cleanup(func() { _ = sub.Unsubscribe(); close(raw); <-done })
	return out
}

// waitPublished waits for a snapshot from aggregator id satisfying cond,
// failing on any snapshot from id that shows forged counts.
func waitPublished(t *testing.T, ch chan published, id string, forged uint64, cond func(proto.Snapshot) bool) proto.Snapshot {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case p := <-ch:
			if p.from != id {
				continue
			}
			if p.s.RequestsTotal >= forged {
				t.Fatalf("%s published forged totals: %+v", id, p.s)
			}
			if cond(p.s) {
				return p.s
			}
		case <-deadline:
			t.Fatalf("no snapshot from %s as wanted", id)
		}
	}
}

// TestForgedSnapshotsAreNotAdopted: snapshots published by anyone but the
// lease holder (unsigned, naming a follower, or dated in the future) change
// neither what the leader publishes nor what a follower publishes once it
// takes over. Before, one such snapshot made the leader publish the forged
// totals until restarted, or stop publishing the scope.
func TestForgedSnapshotsAreNotAdopted(t *testing.T) {
	node, nc := natstest.StartTest(t)
	c := newCluster(t, node, time.Now, haTTL)
	first := c.start()
	lead := c.leader(15 * time.Second)
	follower := c.start()
	wait.For(t, 10*time.Second, "follower to see the lease holder", func() bool {
		return follower.a.elector.Holder() == lead.a.ID()
	})
	live := watchCluster(t, nc)
	report := func(seq, total uint64) {
		t.Helper()
		now := time.Now()
		r := rp{inst: "gw", region: "eu", boot: "b", seq: seq, total: total}.report(now)
		data, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(proto.ReportSubject("eu", "gw"), data); err != nil {
			t.Fatal(err)
		}
	}
	report(1, 10)
	waitPublished(t, live, lead.a.ID(), 1<<40, func(s proto.Snapshot) bool { return s.RequestsTotal == 10 })

	const forgedTotal = 1 << 40
	forge := func(at time.Time, from string) {
		t.Helper()
		s := proto.Snapshot{
			Version: proto.SnapshotVersion, Scope: proto.ClusterScope(), Time: at.UTC().Truncate(time.Second),
			RequestsTotal: forgedTotal, RequestsSuccess: forgedTotal, SuccessRate: 100, Instances: 1,
			DurationCount: forgedTotal, DurationSumNanos: forgedTotal,
		}
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: proto.SnapshotSubject(s.Scope), Data: data, Header: nats.Header{}}
		if from != "" {
			msg.Header.Set(PublisherHeader, from)
		}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	forge(time.Now().Add(time.Second), "")                // unsigned, the next second
	forge(time.Now().Add(2*time.Second), follower.a.ID()) // naming a follower
	forge(time.Now().Add(time.Hour), lead.a.ID())         // the holder's name, an hour ahead
	wait.For(t, 10*time.Second, "the follower to ignore all three", func() bool {
		m := follower.a.metrics.ignored
		return testutil.ToFloat64(m.WithLabelValues(ignoredForeign)) >= 2 && testutil.ToFloat64(m.WithLabelValues(ignoredFuture)) >= 1
	})
	// A copy of the holder's header on a current second: only NATS
	// permissions tell it from the real thing. The leader ignores it; the
	// follower adopts it, but never holds its counters once it leads.
	copied := time.Now().Add(time.Second).UTC().Truncate(time.Second)
	forge(copied, lead.a.ID())
	if got := testutil.ToFloat64(lead.a.metrics.ignored.WithLabelValues(ignoredLeading)); got > 2 {
		t.Fatalf("leader ignored %v, at most the unsigned and the follower's", got)
	}
	// The leader publishes that second itself, with the real totals: had it
	// adopted the copy, it would take the second for published.
	waitPublished(t, live, lead.a.ID(), forgedTotal, func(s proto.Snapshot) bool { return s.Time.Equal(copied) })
	wait.For(t, 10*time.Second, "the follower to adopt the copy", func() bool {
		follower.a.book.mu.Lock()
		defer follower.a.book.mu.Unlock()
		sb := follower.a.book.scopes["cluster"]
		return sb.counts.RequestsTotal == forgedTotal || follower.a.book.refused > 0
	})
	// The leader goes on publishing every second, with the real totals.
	report(2, 20)
	s := waitPublished(t, live, lead.a.ID(), forgedTotal, func(s proto.Snapshot) bool { return s.RequestsTotal == 20 })
	waitPublished(t, live, lead.a.ID(), forgedTotal, func(n proto.Snapshot) bool { return n.Time.After(s.Time.Add(2 * time.Second)) })

	// The follower takes over with the real totals, at once.
	other := follower
	if lead == follower {
		other = first
	}
	c.stop(lead)
	next := c.leader(15*time.Second, lead)
	if next != other {
		t.Fatalf("unexpected leader %s", next.a.ID())
	}
	report(3, 30)
	waitPublished(t, live, next.a.ID(), forgedTotal, func(s proto.Snapshot) bool { return s.RequestsTotal == 30 })
}

// A report whose payload names another instance or region than its subject
// is rejected and counted: with NATS permissions binding a gateway to its
// subject, the payload cannot smuggle another identity in.
func TestReportSubjectMustMatchPayload(t *testing.T) {
	_, nc := natstest.StartTest(t)
	reg := prometheus.NewRegistry()
	a := startAggregator(t, nc, reg, true)
	w := watchSnapshots(t, nc)
	now := time.Now()
	for subject, r := range map[string]rp{
		proto.ReportSubject("eu", "gw-1"): {inst: "gw-2", region: "eu", boot: "b", seq: 1, total: 5}, // another instance
		proto.ReportSubject("us", "gw-3"): {inst: "gw-3", region: "eu", boot: "b", seq: 1, total: 5}, // another region
	} {
		rep := r.report(now)
		data, err := rep.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	gr := rp{inst: "gw-1", region: "eu", boot: "b", seq: 1, total: 7}.report(now)
	good, _ := gr.Encode()
	if err := nc.Publish(proto.ReportSubject("eu", "gw-1"), good); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.RequestsTotal == 7 })
	if got := testutil.ToFloat64(a.metrics.rejected.WithLabelValues(RejectSubject.String())); got != 2 {
		t.Fatalf("subject_mismatch rejections = %v, want 2", got)
	}
	a.mu.Lock()
	n := a.merger.Len()
	a.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d instances tracked, want only gw-1", n)
	}
}
