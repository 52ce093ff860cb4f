package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// clusterWatch records the cluster snapshots a live subscriber receives and
// checks that no second repeats and no total goes backwards.
type clusterWatch struct {
	mu     sync.Mutex
	secs   map[int64]time.Time // second → receipt
	last   proto.Snapshot
	faults []string
}

func (w *clusterWatch) on(msg *nats.Msg) {
	s, err := proto.DecodeSnapshot(msg.Data)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.faults = append(w.faults, err.Error())
		return
	}
	if w.last.Version != 0 && (!s.Time.After(w.last.Time) || s.RequestsTotal < w.last.RequestsTotal) {
		w.faults = append(w.faults, fmt.Sprintf("second %v total %d after second %v total %d", s.Time, s.RequestsTotal, w.last.Time, w.last.RequestsTotal))
	}
	w.last = s
	w.secs[s.Time.Unix()] = time.Now()
}

// seconds counts the snapshots of seconds in [from, to).
func (w *clusterWatch) seconds(from, to time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for sec := range w.secs {
		if sec >= from.Unix() && sec < to.Unix() {
			n++
		}
	}
	return n
}

// TestLiveViewThroughQuorumLoss runs two aggregators on a three-node
// JetStream cluster while gateways report, and stops two of the nodes: the
// lease store has no quorum, core NATS on the third node still carries the
// reports, and the cluster snapshots keep coming every second. When the
// nodes return, leadership resumes, and the totals end exactly at what the
// gateways reported, never having gone backwards or repeated a second.
func TestLiveViewThroughQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node JetStream cluster")
	}
	c := natstest.StartCluster(t, 3)
	connect0 := func() *nats.Conn {
		nc, err := nats.Connect(c.URL(0), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for i := range 2 {
		nc := connect0()
		agg, err := aggregator.New(aggregator.Config{
			NATS: nc, Logger: quietLogger(), ID: fmt.Sprintf("agg-%d", i+1), StateReplicas: 3,
			History: history.StreamConfig{Replicas: 3}, Rollups: history.StreamConfig{Replicas: 3},
		})
		if err != nil {
			t.Fatal(err)
		}
		runUntilCleanup(t, agg.ID(), agg.Run, agg.Shutdown)
	}
	watch := &clusterWatch{secs: map[int64]time.Time{}}
	obs := connect0()
	sub, err := obs.Subscribe(proto.SnapshotSubject(proto.ClusterScope()), watch.on)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	// Three gateways report every 200 ms until stopped.
	pub := connect0()
	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	var sent uint64
	load.Go(func() {
		seq := uint64(0)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			seq++
			for g := range 3 {
				r := proto.Report{
					Version: proto.ReportVersion, Instance: fmt.Sprintf("gw-%d", g), Region: "eu", BootID: "b", Seq: seq,
					Time: time.Now(), StartTime: time.Now().Add(-time.Hour), Interval: 200 * time.Millisecond,
					Counters: proto.Counters{RequestsTotal: 10 * seq, RequestsSuccess: 10 * seq, LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
				}
				data, err := r.Encode()
				if err == nil {
					err = pub.Publish(proto.ReportSubject(r.Region, r.Instance), data)
				}
				if err != nil {
					t.Errorf("publish report: %v", err)
					return
				}
			}
			sent = 30 * seq
		}
	})
	defer func() {
		stopLoad()
		load.Wait()
	}()
	wait.For(t, 60*time.Second, "cluster snapshots with reports", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.last.RequestsTotal > 0
	})

	c.Stop(1)
	c.Stop(2)
	lost := time.Now()
	// After the lease lapses (2 s TTL), the last leader goes on live-only.
	from := lost.Add(4 * time.Second).Truncate(time.Second)
	to := from.Add(6 * time.Second)
	wait.For(t, 20*time.Second, "six seconds without quorum", func() bool { return time.Now().After(to.Add(time.Second)) })
	if n := watch.seconds(from, to); n < 5 {
		t.Errorf("without quorum: cluster snapshots for %d of the 6 seconds from %s, want them flowing", n, from.Format(time.TimeOnly))
	}

	for _, i := range []int{1, 2} {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	back := time.Now().Add(20 * time.Second).Truncate(time.Second)
	wait.For(t, 60*time.Second, "snapshots after quorum returned", func() bool { return watch.seconds(back, back.Add(3*time.Second)) >= 2 })
	stopLoad()
	load.Wait()
	wait.For(t, 30*time.Second, "exact totals", func() bool {
		watch.mu.Lock()
		defer watch.mu.Unlock()
		return watch.last.RequestsTotal == sent
	})
	watch.mu.Lock()
	defer watch.mu.Unlock()
	if len(watch.faults) > 0 {
		t.Fatalf("contract violations: %v", watch.faults)
	}
}
