//go:build linux

package edge

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/logbuf"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// instanceName is the i-th simulated instance.
func instanceName(i int) string { return fmt.Sprintf("gw-%05d", i) }

// cluster publishes, every period until the test ends, what a leader with
// --instance-snapshots all would: a cluster snapshot, one per region and
// one per instance (requests_total 100000 + i for instance i), on its own
// connection.
type cluster struct {
	instances int
	stop      chan struct{}
	done      sync.WaitGroup
}

func publishCluster(t *testing.T, pub *nats.Conn, instances int, period time.Duration) *cluster {
	t.Helper()
	c := &cluster{instances: instances, stop: make(chan struct{})}
	c.done.Go(func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			now := time.Now()
			msgs := []proto.Snapshot{snap(now, 1000), scoped(snap(now, 400), regionEU), scoped(snap(now, 300), proto.RegionScope("us"))}
			for i := range instances {
				msgs = append(msgs, scoped(snap(now, uint64(100000+i)), proto.InstanceScope(instanceName(i))))
			}
			for _, s := range msgs {
				data, err := s.Encode()
				if err != nil {
					t.Errorf("encode: %v", err)
					return
				}
				if err := pub.Publish(proto.SnapshotSubject(s.Scope), data); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
			select {
			case <-c.stop:
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() {
		close(c.stop)
		c.done.Wait()
	})
	return c
}

// startFollowing starts an edge on its own core NATS node, and a second
// connection to publish on.
func startFollowing(t *testing.T, cfg Config) (*testEdge, *nats.Conn) {
	t.Helper()
	node, nc := natstest.StartCore(t)
	// Drops are counted by the edge; not nats.go's line per episode.
	nc.SetErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	cfg.NATS = nc
	te := startEdge(t, cfg)
	pub, err := node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return te, pub
}

// received reads the edge's snapshot_messages_total by kind.
func (te *testEdge) received(kind proto.ScopeKind) int {
	return int(testutil.ToFloat64(te.m.snapshotMsgs[kind]))
}

// afterClusterMessages waits until n more cluster snapshots arrived: time
// passing, measured by the traffic itself.
func (te *testEdge) afterClusterMessages(n int) {
	te.t.Helper()
	target := te.received(proto.ScopeCluster) + n
	wait.For(te.t, 30*time.Second, fmt.Sprintf("%d more cluster snapshots", n), func() bool {
		return te.received(proto.ScopeCluster) >= target
	})
}

// interestLog records the instances announced on proto.InterestSubject.
type interestLog struct {
	mu    sync.Mutex
	names [][]string
}

func watchInterest(t *testing.T, nc *nats.Conn) *interestLog {
	t.Helper()
	l := &interestLog{}
	sub, err := nc.Subscribe(proto.InterestSubject, func(m *nats.Msg) {
		in, err := proto.DecodeInterest(m.Data)
		if err != nil {
			t.Errorf("decode interest: %v", err)
			return
		}
		l.mu.Lock()
		l.names = append(l.names, in.Instances)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// since returns the announcements after the first n, and their count.
func (l *interestLog) since(n int) ([][]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names[n:]), len(l.names)
}

// An edge whose one client follows one instance, while 300 instances are
// published every 50 ms, receives that instance's snapshots and the
// cluster's and regions', nothing else; announces exactly that instance;
// after the client left and FollowGrace passed it receives no instance
// snapshot and announces nothing; a client that follows the instance again
// gets its data.
func TestFollowsOnlyFollowedInstances(t *testing.T) {
	t.Parallel()
	te, pub := startFollowing(t, Config{FollowGrace: 300 * time.Millisecond})
	interest := watchInterest(t, pub)
	const instances = 300
	publishCluster(t, pub, instances, 50*time.Millisecond)

	// Nobody follows an instance: none arrives.
	te.afterClusterMessages(10)
	if n := te.received(proto.ScopeInstance); n != 0 {
		t.Fatalf("%d instance snapshots received while no client follows one", n)
	}
	// (The region subscription may have missed the first round.)
	if r := te.received(proto.ScopeRegion); r < 2*(10-1) {
		t.Fatalf("%d region snapshots received, want both regions' all along", r)
	}

	const name = "gw-00042"
	c := dial(t, te.url+"?instance="+name)
	if ev := c.nextSnapshot(5 * time.Second); ev.Values["requests_total"] != 100042 {
		t.Fatalf("first snapshot of %s: %v", name, ev.Values)
	}
	inst0, cl0 := te.received(proto.ScopeInstance), te.received(proto.ScopeCluster)
	_, announced0 := interest.since(0)
	te.afterClusterMessages(40) // 2 s: at least one announcement round
	inst, cl := te.received(proto.ScopeInstance)-inst0, te.received(proto.ScopeCluster)-cl0
	// One snapshot of the followed instance per cluster snapshot (give or
	// take the round in flight), not one of each of the 300.
	if inst < cl-2 || inst > cl+2 {
		t.Fatalf("while following one instance: %d instance snapshots for %d cluster ones, want as many", inst, cl)
	}
	if got := te.follow.instances(); got != 1 || !te.follow.following(name) {
		t.Fatalf("following %d instances (%s: %v), want only %s", got, name, te.follow.following(name), name)
	}
	anns, _ := interest.since(announced0)
	if len(anns) == 0 {
		t.Fatal("no interest announced while following an instance")
	}
	for _, a := range anns {
		if !slices.Equal(a, []string{name}) {
			t.Fatalf("announced %v, want [%s]", a, name)
		}
	}

	// The client leaves: after the grace the edge unsubscribes, forgets
	// the instance's state and stops announcing it.
	c.conn.Close()
	wait.For(t, 10*time.Second, "instance unfollowed", func() bool { return te.follow.instances() == 0 })
	if st := te.scopes.get(proto.InstanceScope(name)); st != nil {
		t.Errorf("state of %s kept after it was unfollowed", name)
	}
	te.afterClusterMessages(4) // messages in flight at the unsubscription
	inst0 = te.received(proto.ScopeInstance)
	_, announced0 = interest.since(0)
	te.afterClusterMessages(40)
	if n := te.received(proto.ScopeInstance) - inst0; n != 0 {
		t.Fatalf("%d instance snapshots received after the last follower left", n)
	}
	if anns, _ := interest.since(announced0); len(anns) != 0 {
		t.Fatalf("announced %v after the last follower left", anns)
	}
	if got := testutil.ToFloat64(te.m.snapshotsInvalid); got != 0 {
		t.Errorf("%v invalid snapshots", got)
	}

	// Following again works: the edge subscribes at once.
	c2 := dial(t, te.url)
	c2.expectEvent(proto.EventSnapshot, 2*time.Second)
	c2.sendText(`{"instance":"gw-00299"}`)
	ev := c2.nextSnapshot(5 * time.Second)
	if ev.Values["requests_total"] != 100299 {
		ev = c2.nextSnapshot(5 * time.Second)
	}
	if ev.Values["requests_total"] != 100299 {
		t.Fatalf("after following gw-00299: %v", ev.Values)
	}
	if !te.follow.following("gw-00299") {
		t.Fatal("gw-00299 not followed while a client subscribes to it")
	}
}

// A client that reconnects within FollowGrace finds its instance still
// followed and current: no unsubscription, no lookup.
func TestFollowGraceKeepsInstanceForReconnect(t *testing.T) {
	t.Parallel()
	te, pub := startFollowing(t, Config{FollowGrace: time.Hour})
	interest := watchInterest(t, pub)
	publishCluster(t, pub, 20, 50*time.Millisecond)
	c := dial(t, te.url+"?instance=gw-00007")
	if ev := c.nextSnapshot(5 * time.Second); ev.Values["requests_total"] != 100007 {
		t.Fatalf("first snapshot: %v", ev.Values)
	}
	st := te.scopes.get(proto.InstanceScope("gw-00007"))
	c.conn.Close()
	wait.For(t, 10*time.Second, "the connection gone and its probe over", func() bool {
		return te.reg.len() == 0 && len(te.interest.probing(nil, time.Now())) == 0
	})
	_, announced0 := interest.since(0)
	te.afterClusterMessages(40) // two follow rounds
	if !te.follow.following("gw-00007") {
		t.Fatal("instance unfollowed within the grace")
	}
	// Still announced: the aggregators keep publishing what the edge
	// still subscribes to.
	anns, _ := interest.since(announced0)
	if len(anns) == 0 || !slices.Equal(anns[len(anns)-1], []string{"gw-00007"}) {
		t.Fatalf("announced %v within the grace, want [gw-00007]", anns)
	}
	before := te.received(proto.ScopeInstance)
	te.afterClusterMessages(10)
	if te.received(proto.ScopeInstance) == before {
		t.Fatal("no snapshots of the instance within the grace")
	}
	c2 := dial(t, te.url+"?instance=gw-00007")
	c2.nextSnapshot(2 * time.Second)
	if got := te.scopes.get(proto.InstanceScope("gw-00007")); got != st {
		t.Error("the reconnecting client got a new scope state, want the one followed all along")
	}
}

// When intake falls behind and NATS drops snapshots (a slow consumer),
// every drop is counted in snapshot_messages_dropped_total and the edge
// logs one line, not one per episode or subscription.
func TestSnapshotDropsCountedAndLoggedOnce(t *testing.T) {
	t.Parallel()
	var logs logbuf.Buffer
	te, pub := startFollowing(t, Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	interest := watchInterest(t, pub)
	publishCluster(t, pub, 2, 50*time.Millisecond)
	// A followed instance makes the follow loop announce every round: the
	// test sees its rounds pass.
	c := dial(t, te.url+"?instance=gw-00001")
	c.nextSnapshot(5 * time.Second)

	old := snap(time.Now(), 1)
	data, err := old.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const line = "nats slow consumer: live snapshots dropped"
	episode := func() {
		t.Helper()
		before := te.follow.dropped()
		// Intake stalls on the scope table while a burst larger than its
		// queue arrives.
		te.scopes.mu.Lock()
		for range snapshotQueue + 1000 {
			if err := pub.Publish(clusterSubject, data); err != nil {
				te.scopes.mu.Unlock()
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			te.scopes.mu.Unlock()
			t.Fatal(err)
		}
		err := wait.Until(context.Background(), 10*time.Second, func() bool { return te.follow.dropped() > before })
		te.scopes.mu.Unlock()
		if err != nil {
			t.Fatal("no snapshot dropped while intake stalled")
		}
		// Two rounds after the drops: the second one's check saw them.
		_, n := interest.since(0)
		wait.For(t, 10*time.Second, "two follow rounds", func() bool { _, m := interest.since(0); return m >= n+2 })
	}
	episode()
	if n := logs.Count(line); n != 1 {
		t.Fatalf("%d slow-consumer lines after one episode, want 1", n)
	}
	episode()
	if n := logs.Count(line); n != 1 {
		t.Fatalf("%d slow-consumer lines after two episodes within a minute, want 1", n)
	}
	fams, err := te.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, f := range fams {
		if f.GetName() == "meridian_edge_snapshot_messages_dropped_total" {
			counted = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if dropped := te.follow.dropped(); counted < 2 || counted != float64(dropped) {
		t.Errorf("snapshot_messages_dropped_total = %v, NATS dropped %d", counted, dropped)
	}
}
