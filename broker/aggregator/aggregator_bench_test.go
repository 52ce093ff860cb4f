package aggregator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
)

// BenchmarkPublishTick is one leader tick with 1000 instances in 10 regions
// against an embedded NATS server with the file-backed history stream:
// merge, encode and publish 1011 snapshots, and wait for every ack; every
// 60th tick also publishes the minute's 1011 rollups. (Leadership is by
// hand: the state write is BenchmarkEncodeState.)
func BenchmarkPublishTick(b *testing.B) {
	_, nc := natstest.StartTest(b)
	sec := t0
	a, err := New(Config{NATS: nc, Logger: quiet, Now: func() time.Time { return sec }, LeaderDisabled: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.js.CleanupPublisher)
	ctx := context.Background()
	if _, err := history.EnsureStream(ctx, a.js, history.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	if _, err := history.EnsureRollupStream(ctx, a.js, history.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		r := rp{inst: fmt.Sprintf("gw-%04d", i), region: fmt.Sprintf("region-%d", i%10), boot: "x", seq: 1, total: 10, durMs: 10}
		a.merger.Apply(r.report(t0), t0)
	}
	b.ReportAllocs()
	for b.Loop() {
		sec = sec.Add(time.Second) // a new second: new message ids, nothing deduplicated
		a.tick(ctx, sec)
	}
	if n := testutil.ToFloat64(a.metrics.historyErrors); n != 0 {
		b.Fatalf("%v history write errors", n)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1011, "µs/snapshot")
}
