//go:build linux

package edge

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// fanInInstances and fanInFollowed: a cluster of 10 000 instances
// published every second (--instance-snapshots all, or as many followed by
// other edges), of which this edge's clients follow 10.
const (
	fanInInstances = 10_000
	fanInFollowed  = 10
)

// BenchmarkFanIn measures the CPU this process spends on one second of a
// cluster's snapshot traffic (the cluster, 3 regions, 10 000 instances),
// from the publisher's connection through the embedded NATS server to the
// edge's intake, with 10 instances followed:
//
//   - no-edge: publisher and server only (the baseline to subtract);
//   - subscribe-all: the edge subscribed to every snapshot subject, as
//     before it followed instances;
//   - follow: the edge subscribed to the cluster, the regions and the 10
//     instances followed.
//
// A round publishes one second (each a second newer, as a leader would)
// and waits until the edge took every message in (or NATS dropped it:
// drops/round). cpu-µs/round is the process's user+system CPU over the
// round, encoding excluded; the edge's fan-in cost is the difference to
// no-edge. Run the modes interleaved: -count 5, and compare medians.
func BenchmarkFanIn(b *testing.B) {
	for _, mode := range []string{"no-edge", "subscribe-all", "follow"} {
		b.Run(mode, func(b *testing.B) { benchFanIn(b, mode) })
	}
}

func benchFanIn(b *testing.B, mode string) {
	node, nc := natstest.StartCore(b)
	// Drops are expected of subscribe-all, and counted: not printed.
	nc.SetErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	pub, err := node.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	var te *testEdge
	perRound := 0
	if mode != "no-edge" {
		e, err := New(Config{NATS: nc, Listen: "127.0.0.1:0", HeartbeatInterval: noTimer, PingInterval: noTimer,
			StaleAfter: noTimer, FollowGrace: time.Hour, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		e.follow.all = mode == "subscribe-all"
		te = runEdge(b, e, nc)
		// Follow 10 instances, as 10 clients' subscriptions would (a pin
		// each), and wait for the subscriptions.
		start := time.Now().Add(-time.Hour).Truncate(time.Second)
		for i := range fanInFollowed {
			te.scopes.seed(scoped(snap(start, 1), proto.InstanceScope(instanceName(i*997))))
		}
		te.interest.poke()
		wait.For(b, 10*time.Second, "instances followed", func() bool {
			return e.follow.all || e.follow.instances() == fanInFollowed
		})
		perRound = 4 + fanInFollowed
		if e.follow.all {
			perRound = 4 + fanInInstances
		}
	}
	scopes := []proto.Scope{proto.ClusterScope()}
	for _, r := range []string{"eu", "us", "ap"} {
		scopes = append(scopes, proto.RegionScope(r))
	}
	for i := range fanInInstances {
		scopes = append(scopes, proto.InstanceScope(instanceName(i)))
	}
	subjects := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		subjects = append(subjects, proto.SnapshotSubject(sc))
	}
	payloads := make([][]byte, len(scopes))
	base := time.Now().Add(-time.Hour).Truncate(time.Second).Add(time.Second)
	taken := func() int64 {
		if te == nil {
			return 0
		}
		n := int64(0)
		for k := range te.m.snapshotMsgs {
			n += int64(te.received(proto.ScopeKind(k)))
		}
		return n + te.follow.dropped()
	}
	var cpu time.Duration
	dropped0 := int64(0)
	if te != nil {
		dropped0 = te.follow.dropped()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		at := base.Add(time.Duration(i) * time.Second)
		for k, sc := range scopes {
			s := scoped(snap(at, uint64(1000+i)), sc)
			if payloads[k], err = s.Encode(); err != nil {
				b.Fatal(err)
			}
		}
		want := taken() + int64(perRound)
		b.StartTimer()
		c0 := cpuTime()
		publishRound(b, pub, subjects, payloads)
		if te != nil {
			if err := wait.Until(context.Background(), 30*time.Second, func() bool { return taken() >= want }); err != nil {
				b.Fatalf("round %d: the edge took %d of %d messages", i, taken()-want+int64(perRound), perRound)
			}
		}
		cpu += cpuTime() - c0
	}
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/round")
	if te != nil {
		b.ReportMetric(float64(te.follow.dropped()-dropped0)/float64(b.N), "drops/round")
	}
}

func publishRound(b *testing.B, pub *nats.Conn, subjects []string, payloads [][]byte) {
	for k, subj := range subjects {
		if err := pub.Publish(subj, payloads[k]); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		b.Fatal(err)
	}
}
