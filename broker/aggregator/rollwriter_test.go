package aggregator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// burstRig is a leader by hand (LeaderDisabled) tracking n instances in 10
// regions, with its history and rollup streams on an embedded NATS server and
// its rollup writer running; ticks are driven by hand on a fake clock.
type burstRig struct {
	a   *Aggregator
	js  jetstream.JetStream
	now time.Time
	n   int
	seq uint64
	// fleet, when set, reports for the instances (with latency histograms);
	// else a small report without one each.
	fleet *simFleet
}

// Without writer the queued instance rollups stay queued.
func newBurstRig(tb testing.TB, n int, spread time.Duration, writer bool) *burstRig {
	tb.Helper()
	_, nc := natstest.StartTest(tb)
	r := &burstRig{n: n, now: t0}
	a, err := New(Config{NATS: nc, Logger: quiet, Now: func() time.Time { return r.now }, LeaderDisabled: true,
		RollupSpread: spread, Merge: MergerConfig{MaxInstances: n}})
	if err != nil {
		tb.Fatal(err)
	}
	r.a = a
	r.js, err = jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
		a.js.CleanupPublisher()
		a.rollJS.CleanupPublisher()
	})
	if _, err := history.EnsureStream(ctx, a.js, history.StreamConfig{}); err != nil {
		tb.Fatal(err)
	}
	if _, err := history.EnsureRollupStream(ctx, a.js, history.StreamConfig{}); err != nil {
		tb.Fatal(err)
	}
	if writer {
		wg.Go(func() { a.rollupLoop(ctx) })
	}
	return r
}

// tick makes every instance report at the next second, then ticks it, and
// returns how long the tick took.
func (r *burstRig) tick(ctx context.Context) time.Duration {
	r.now = r.now.Add(time.Second)
	r.seq++
	r.a.mu.Lock()
	if r.fleet != nil {
		r.fleet.fill(r.a.merger, r.now)
	}
	for i := range r.n * boolInt(r.fleet == nil) {
		p := rp{inst: fmt.Sprintf("gw-%06d", i), region: fmt.Sprintf("region-%d", i%10), boot: "x", seq: r.seq, total: 10 * r.seq, durMs: 10 * r.seq}
		r.a.merger.Apply(p.report(r.now), r.now)
	}
	r.a.mu.Unlock()
	start := time.Now()
	r.a.tick(ctx, r.now)
	return time.Since(start)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// stored is the number of messages on subject in stream.
func (r *burstRig) stored(tb testing.TB, stream, subject string) uint64 {
	tb.Helper()
	s, err := r.js.Stream(context.Background(), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		tb.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// TestRollupBurstLeavesSnapshotsOnTime: at a minute boundary with 10,000
// instances, the cluster and region rollups and the next seconds' snapshots
// are written and acknowledged at once, while the 10,000 instance rollups
// follow, paced, each stored exactly once.
func TestRollupBurstLeavesSnapshotsOnTime(t *testing.T) {
	const n = 10_000
	r := newBurstRig(t, n, 2*time.Second, true)
	ctx := context.Background()
	r.now = t0.Add(57 * time.Second)
	for range 3 { // seconds 58, 59, and 60: the minute closes
		r.tick(ctx)
	}
	// Written and acknowledged before the boundary tick returned.
	if got := r.stored(t, proto.RollupStream, proto.RollupSubject(proto.Scope{Kind: proto.ScopeCluster})); got != 1 {
		t.Fatalf("%d cluster rollups stored after the boundary tick, want 1", got)
	}
	if got := r.stored(t, proto.RollupStream, proto.RollupSubjectPrefix+".region.*"); got != 10 {
		t.Fatalf("%d region rollups stored after the boundary tick, want 10", got)
	}
	if q := r.a.rollq.len(); q == 0 {
		t.Fatal("no instance rollup queued after the boundary tick: they were not handed to the paced writer")
	}
	for range 2 { // seconds 61 and 62
		r.tick(ctx)
	}
	// Every snapshot of every tick acknowledged: none waited behind the
	// rollups and went out without an ack.
	if e := testutil.ToFloat64(r.a.metrics.historyErrors); e != 0 {
		t.Fatalf("%v history writes unacknowledged around the minute boundary", e)
	}
	cluster := proto.SnapshotSubject(proto.Scope{Kind: proto.ScopeCluster})
	if got := r.stored(t, proto.HistoryStream, cluster); got != 5 {
		t.Fatalf("%d cluster snapshots stored for 5 seconds", got)
	}
	instances := proto.RollupSubjectPrefix + ".instance.*"
	wait.For(t, 60*time.Second, "every instance rollup stored", func() bool {
		return r.stored(t, proto.RollupStream, instances) == n
	})
	wait.For(t, 10*time.Second, "rollup queue drained", func() bool { return r.a.rollq.len() == 0 && r.a.rollq.size() == 0 })
	if got := testutil.ToFloat64(r.a.metrics.rollups); got != n+11 {
		t.Fatalf("%v rollups published, want %d", got, n+11)
	}
	if d, retries := r.a.rollq.counts(); d != 0 || retries != 0 {
		t.Fatalf("%d rollups dropped, %d retried", d, retries)
	}
}

// TestRollupQueuePacesAndBounds: the writer takes the queue's share due per
// step (spread evenly up to the deadline, at most the pending limit), puts
// failed ones back first, and drops the ones too old to retry safely.
func TestRollupQueuePacesAndBounds(t *testing.T) {
	q := newRollupQueue()
	start := time.Now()
	fill := func(from, to int) func([]proto.Snapshot) []proto.Snapshot {
		return func(dst []proto.Snapshot) []proto.Snapshot {
			for i := from; i < to; i++ {
				dst = append(dst, proto.Snapshot{Scope: proto.InstanceScope(fmt.Sprint(i)), Time: minute0})
			}
			return dst
		}
	}
	q.add(fill(0, 1000), start, 10*time.Second)
	got, dropped := q.take(nil, start, minute0.Unix(), 512)
	if dropped != 0 || len(got) != 10 { // 1000 over 100 steps
		t.Fatalf("took %d (dropped %d) at the start, want 10", len(got), dropped)
	}
	if b := q.size(); b != 990*rollupBytes(&got[0]) {
		t.Fatalf("queue of 990 counts %d bytes", b)
	}
	q.retry(got[:3])
	if got, _ := q.take(nil, start.Add(9950*time.Millisecond), minute0.Unix(), 512); len(got) != 512 || got[0].Scope.Name != "0" {
		t.Fatalf("at the deadline took %d starting %q, want the 512 limit starting with the retried", len(got), got[0].Scope.Name)
	}
	if n := q.len(); n != 1000-10+3-512 {
		t.Fatalf("%d left", n)
	}
	if _, retries := q.counts(); retries != 3 {
		t.Fatalf("%d retries counted", retries)
	}
	got, dropped = q.take(nil, start, minute0.Unix()+1, 512)
	if dropped != 481 || len(got) != 0 || q.len() != 0 {
		t.Fatalf("past the bound: took %d, dropped %d, %d left; want all dropped", len(got), dropped, q.len())
	}
	if d, _ := q.counts(); d != 481 {
		t.Fatalf("%d drops counted", d)
	}
	if b := q.size(); b != 0 {
		t.Fatalf("empty queue counts %d bytes", b)
	}
}
