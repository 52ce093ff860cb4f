package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// snapshotLog records every live cluster snapshot from NATS and checks on
// the fly that counters never decrease and no second is published twice.
type snapshotLog struct {
	t       *testing.T
	mu      sync.Mutex
	last    proto.Snapshot
	seen    map[int64]int
	maxGap  time.Duration
	lastAt  time.Time
	violate []string
}

func watchSnapshots(t *testing.T, nc *nats.Conn) *snapshotLog {
	l := &snapshotLog{t: t, seen: map[int64]int{}}
	sub, err := nc.Subscribe(proto.SnapshotSubject(proto.ClusterScope()), func(m *nats.Msg) {
		s, err := proto.DecodeSnapshot(m.Data)
		if err != nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.seen[s.Time.Unix()]++; l.seen[s.Time.Unix()] > 1 {
			l.violate = append(l.violate, "second "+s.Time.Format(time.RFC3339)+" published twice")
		}
		if s.RequestsTotal < l.last.RequestsTotal || s.RequestsSuccess < l.last.RequestsSuccess || s.RequestsError < l.last.RequestsError {
			l.violate = append(l.violate, "counters decreased at "+s.Time.Format(time.RFC3339))
		}
		if !l.lastAt.IsZero() && s.Time.Sub(l.lastAt) > l.maxGap {
			l.maxGap = s.Time.Sub(l.lastAt)
		}
		l.last, l.lastAt = s, s.Time
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return l
}

// exactLoad runs loads through every gateway and waits for the snapshots
// to show exactly what the gateways answered.
type exactLoad struct {
	t    *testing.T
	ctx  context.Context
	c    *cluster
	rps  float64
	mu   sync.Mutex
	sent loadgen.Result
}

// run sends n requests at rps, 10 % of them answered with errors.
func (l *exactLoad) run(n int) {
	l.t.Helper()
	res := runLoad(l.t, l.ctx, loadgen.Config{Targets: l.c.gatewayURLs(), RPS: l.rps, Requests: n, ErrorRatio: 0.1})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent.Sent += res.Sent
	l.sent.Succeeded += res.Succeeded
	l.sent.Failed += res.Failed
}

// waitFor waits until latest's counters are what was sent.
func (l *exactLoad) waitFor(what string, latest func() proto.Snapshot) {
	l.t.Helper()
	wait.For(l.t, 15*time.Second, what, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		s := latest()
		return s.RequestsTotal == l.sent.Sent && s.RequestsSuccess == l.sent.Succeeded && s.RequestsError == l.sent.Failed
	})
}

func (l *snapshotLog) latest() proto.Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *snapshotLog) check() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violate {
		l.t.Error(v)
	}
}

// TestFailoverKeepsTotalsExact runs two aggregators behind real gateways
// under load, kills the leader, restarts a gateway, then restarts every
// aggregator; the cluster totals must equal what the load generator was
// answered, never decrease, never repeat a second, and live snapshots must
// resume within 3 s of a kill.
func TestFailoverKeepsTotalsExact(t *testing.T) {
	c := startCluster(t, clusterOptions{aggregators: 2, leaderTTL: time.Second})
	log := watchSnapshots(t, c.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	el := &exactLoad{t: t, ctx: ctx, c: c, rps: 300}
	load := el.run
	waitExact := func(what string) { t.Helper(); el.waitFor(what, log.latest) }

	wait.For(t, 10*time.Second, "a leader", func() bool { return c.leader() != nil })
	load(300)
	waitExact("totals after the first load")

	// Kill the leader while load runs.
	var wg sync.WaitGroup
	wg.Go(func() { load(600) })
	first := c.leader()
	killed := time.Now()
	c.stopAggregator(first, true)
	wait.For(t, 5*time.Second, "the follower to take over", func() bool { return c.leader() != nil })
	resumed := time.Now()
	before := log.latest().Time
	wait.For(t, 5*time.Second, "a snapshot from the new leader", func() bool { return log.latest().Time.After(before) })
	t.Logf("leader killed; follower leads after %v, live snapshots resumed %v after the kill",
		resumed.Sub(killed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	wg.Wait()
	waitExact("totals after the failover")

	// A graceful gateway restart, then a fresh follower and another failover.
	c.stopGateway("gw-us-1")
	c.startGateway("us", "gw-us-1")
	c.startAggregator()
	load(300)
	waitExact("totals after a gateway restart")

	// Restart every aggregator: the persisted state continues the totals.
	for _, ra := range c.aggs {
		if !ra.nc.IsClosed() {
			c.stopAggregator(ra, false)
		}
	}
	c.startAggregator()
	c.startAggregator()
	wait.For(t, 10*time.Second, "a leader after a full restart", func() bool { return c.leader() != nil })
	load(300)
	waitExact("totals after every aggregator restarted")

	log.check()
	log.mu.Lock()
	gap := log.maxGap
	log.mu.Unlock()
	t.Logf("largest gap between consecutive snapshot times: %v (the full restart included)", gap)
}
