package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/benchmark/scale"
)

// TestBenchScaleSmall runs the scale harness end to end at a small N, with
// the real roles as separate processes and WebSocket subscribers of the
// edge, and has it check its own figures: one report per instance and
// second reached NATS and the leader, every second of the window has its
// cluster snapshot, history grew, every subscriber got at most one snapshot
// per second, the killed leader was replaced, and the cluster and region
// totals ended exactly at what the gateways published without ever going
// backwards.
func TestBenchScaleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := runScale(ctx, t, scale.Config{
		Command: selfCommand, Dir: t.TempDir(), Instances: 300, Regions: 3,
		Warmup: 2 * time.Second, Duration: 4 * time.Second, Aggregators: 2,
		Subscribers: 12, FollowedInstances: 2,
	})
	if len(rep.Failovers) != 1 || len(rep.Groups) != 1 || rep.Groups[0].Follower == nil {
		t.Fatalf("two aggregators but no failover or follower figures: %+v", rep)
	}
	// The cluster, three regions and the two instances the subscribers
	// follow: on demand, no other instance is published.
	if rep.DuePerS != 1+3+2 || rep.InstanceSnaps != "on-demand" || rep.Subscribers.FollowedInstances != 2 {
		t.Fatalf("due snapshots %.0f/s (instance snapshots %q, %d followed), want %d", rep.DuePerS, rep.InstanceSnaps, rep.Subscribers.FollowedInstances, 1+3+2)
	}
	if l := rep.Latency; l == nil || l.Want.Buckets != scale.DefaultHistogramBuckets || l.Snapshots == 0 {
		t.Fatalf("latency figures %+v, want the default %d-bucket histograms compared", l, scale.DefaultHistogramBuckets)
	}
	if len(rep.State) != 1 || rep.State[0].Key != "merge" {
		t.Fatalf("merge states %+v, want the single tier's", rep.State)
	}
}

// TestBenchScaleShardedOnNATSCluster runs the sharded design (two region
// shards and a cluster tier, two aggregators each) on three NATS processes
// routed on loopback, the streams at three replicas and the roles spread
// over the nodes: every node and group is measured, each shard received
// only its regions' reports and the cluster tier none, a region shard's and
// then the cluster tier's leader were replaced, and the cluster and region
// totals ended exact.
func TestBenchScaleShardedOnNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ten processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := runScale(ctx, t, scale.Config{
		Command: selfCommand, Dir: t.TempDir(), Instances: 300, Regions: 3,
		Warmup: 2 * time.Second, Duration: 3 * time.Second, Aggregators: 2, NATSNodes: 3, Shards: 2,
		Subscribers: 6, FollowedInstances: -1,
	})
	if len(rep.NATSPerNode) != 3 || rep.HistoryReplicas != 3 || rep.Subscribers.FollowedInstances != 0 || rep.DuePerS != 1+3 {
		t.Fatalf("nodes %d, replicas %d, followed instances %d, due %.0f/s: want 3 nodes, R3, none followed, 4 due",
			len(rep.NATSPerNode), rep.HistoryReplicas, rep.Subscribers.FollowedInstances, rep.DuePerS)
	}
	var keys []string
	for _, s := range rep.State {
		keys = append(keys, s.Key)
	}
	if len(rep.Groups) != 3 || len(rep.Failovers) != 2 || rep.Failovers[0].Group != "shard-1" || rep.Failovers[1].Group != "cluster-tier" ||
		strings.Join(keys, " ") != "merge.cluster merge.region.r0.r2 merge.region.r1" {
		t.Fatalf("groups %d, failovers %+v, state keys %v: want two shards and the cluster tier, each failed over once, each with its state",
			len(rep.Groups), rep.Failovers, keys)
	}
}

func TestBenchScaleRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--instances", "-5"},
		{"--aggregators", "3"},
		{"--duration", "1s"},
		{"--regions", "0", "--instances", "1"},
		{"--instance-snapshots", "some"},
		{"--nats-nodes", "2"},
		{"--shards", "5", "--regions", "4"},
		{"--subscribers", "-1"},
		{"--followed-instances", "-2"},
		{"--subscriber-phase", "950ms"},
		{"--histogram-buckets", "-2"},
		{"--histogram-buckets", "257"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"meridian", "bench", "scale"}, args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "invalid scale benchmark config") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and the reason", args, code, errOut.String())
		}
	}
}

// runScale runs the harness, logs its table and fails the test when the
// report contradicts itself (Report.Check).
func runScale(ctx context.Context, t *testing.T, cfg scale.Config) scale.Report {
	t.Helper()
	rep, err := scale.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if err := rep.Check(); err != nil {
		t.Fatal(err)
	}
	return rep
}
