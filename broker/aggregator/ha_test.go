package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// haTTL is the lease in the HA tests: a killed leader is replaced within
// about a second.
const haTTL = time.Second

// member is one aggregator of a test cluster, on a NATS connection of its
// own so that closing it cuts the aggregator off like kill -9 would.
type member struct {
	a    *Aggregator
	nc   *nats.Conn
	done chan error
}

// cluster runs aggregators against one embedded NATS server.
type cluster struct {
	t       *testing.T
	node    *natsnode.Node
	now     func() time.Time
	ttl     time.Duration
	members []*member
	n       int
}

func newCluster(t *testing.T, node *natsnode.Node, now func() time.Time, ttl time.Duration) *cluster {
	return &cluster{t: t, node: node, now: now, ttl: ttl}
}

func (c *cluster) start() *member {
	c.t.Helper()
	nc, err := nats.Connect(c.node.ClientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	c.n++
	a, err := New(Config{
		NATS: nc, Logger: quiet, Now: c.now, ID: fmt.Sprintf("agg-%d", c.n),
		Leader: leader.Config{TTL: c.ttl},
		// These tests follow instance scopes on the wire, with no edge to
		// announce interest.
		InstanceSnapshots: InstanceSnapshotsAll,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	m := &member{a: a, nc: nc, done: make(chan error, 1)}
	go func() { m.done <- a.Run(context.Background()) }()
	c.members = append(c.members, m)
	c.t.Cleanup(func() { c.stop(m) })
	return m
}

// stop shuts m down gracefully (persist, resign) unless its connection was
// closed already; it is idempotent.
func (c *cluster) stop(m *member) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.a.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown %s: %v", m.a.ID(), err)
	}
	if err, ok := <-m.done; ok {
		if err != nil {
			c.t.Errorf("run %s: %v", m.a.ID(), err)
		}
		close(m.done)
	}
	m.nc.Close()
	for i, x := range c.members {
		if x == m {
			c.members = append(c.members[:i], c.members[i+1:]...)
			break
		}
	}
}

// kill cuts m off from NATS at once, as kill -9 would: no state write, no
// resignation, nothing published after; then reaps it.
func (c *cluster) kill(m *member) {
	m.nc.Close()
	c.stop(m)
}

// leader waits for exactly one member but except to lead and returns it.
func (c *cluster) leader(within time.Duration, except ...*member) *member {
	c.t.Helper()
	var l *member
	wait.For(c.t, within, "exactly one leader", func() bool {
		l = nil
		n := 0
		for _, m := range c.members {
			if m.a.Leader() && !slices.Contains(except, m) {
				l = m
				n++
			}
		}
		return n == 1
	})
	return l
}

// describe says what each member is doing, for failure messages.
func (c *cluster) describe() string {
	var b strings.Builder
	for _, m := range c.members {
		m.a.book.mu.Lock()
		pending := 0
		for _, sb := range m.a.book.scopes {
			pending += len(sb.pending)
		}
		m.a.book.mu.Unlock()
		fmt.Fprintf(&b, "%s: leader %v (lease %v), changes %v, rollups %v, pending %d, restore errors %v, state errors %v, stream errors %v\n",
			m.a.ID(), m.a.Leader(), m.a.elector.Leading(), testutil.ToFloat64(m.a.metrics.leaderChanges),
			testutil.ToFloat64(m.a.metrics.rollups), pending, testutil.ToFloat64(m.a.metrics.restoreErrors),
			testutil.ToFloat64(m.a.metrics.stateErrors), testutil.ToFloat64(m.a.metrics.historyErrors))
	}
	return b.String()
}

// synthGW is a synthetic gateway instance: cumulative counters of its
// current boot, published as real reports.
type synthGW struct {
	inst, region string
	boot         string
	start        time.Time
	seq          uint64
	c            proto.Counters
}

func (g *synthGW) newBoot(now time.Time) {
	g.boot = fmt.Sprintf("%s-%d", g.inst, now.UnixNano())
	g.start, g.seq = now, 0
	g.c = proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)}
}

func (g *synthGW) serve(n, errs uint64) {
	g.c.RequestsTotal += n
	g.c.RequestsSuccess += n - errs
	g.c.RequestsError += errs
	g.c.DurationCount += n
	g.c.DurationSumNanos += n * uint64(3*time.Millisecond)
	g.c.LatencyBuckets[0] += n
	g.c.ActiveConnections = int64(n % 4)
}

func (g *synthGW) report(final bool) []byte {
	g.seq++
	r := proto.Report{
		Version: proto.ReportVersion, Instance: g.inst, Region: g.region, BootID: g.boot, Seq: g.seq,
		Time: time.Now(), StartTime: g.start, Interval: 50 * time.Millisecond, Final: final, Counters: g.c,
	}
	r.LatencyBuckets = append([]uint64(nil), g.c.LatencyBuckets...)
	data, err := r.Encode()
	if err != nil {
		panic(err)
	}
	return data
}

// fleet drives synthetic gateways from one goroutine: every 50ms each
// serves a few requests and publishes a report. While lossy, a report is
// dropped now and then (its sequence number skipped) and another sent
// twice. The requests served, minus those a crash loses, are what the
// cluster totals must come to.
type fleet struct {
	t  *testing.T
	nc *nats.Conn

	mu      sync.Mutex
	gws     []*synthGW
	rnd     *rand.Rand
	serving bool
	lossy   bool
	served  proto.Counters // over every boot
	lost    proto.Counters // served but never reported (crashes)
	dropped int
	doubled int

	stop chan struct{}
	done chan struct{}
}

func startFleet(t *testing.T, nc *nats.Conn, names ...string) *fleet {
	f := &fleet{t: t, nc: nc, rnd: rand.New(rand.NewPCG(1, 2)), serving: true, lossy: true,
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range names {
		region, inst, _ := strings.Cut(n, "/")
		g := &synthGW{inst: inst, region: region}
		g.newBoot(time.Now())
		f.gws = append(f.gws, g)
	}
	go f.run()
	t.Cleanup(f.halt)
	return f
}

func (f *fleet) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

func (f *fleet) run() {
	defer close(f.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		f.mu.Lock()
		for _, g := range f.gws {
			if f.serving {
				n := 1 + f.rnd.Uint64N(20)
				e := f.rnd.Uint64N(n/4 + 1)
				g.serve(n, e)
				f.served.RequestsTotal += n
				f.served.RequestsError += e
			}
			data := g.report(false)
			switch {
			case f.lossy && g.seq%7 == 3:
				f.dropped++ // lost on the way: the next report covers it
			case f.lossy && g.seq%5 == 0:
				f.doubled++
				f.publish(g, data)
				f.publish(g, data)
			default:
				f.publish(g, data)
			}
		}
		f.mu.Unlock()
	}
}

func (f *fleet) publish(g *synthGW, data []byte) {
	// Errors only when the connection closes at the end of the test.
	_ = f.nc.Publish(proto.ReportSubject(g.region, g.inst), data)
}

// restart restarts gateway i gracefully: a final report with everything it
// served, then a new boot that reports at once.
func (f *fleet) restart(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.gws[i]
	f.publish(g, g.report(true))
	g.newBoot(time.Now())
	g.serve(3, 1)
	f.served.RequestsTotal += 3
	f.served.RequestsError++
	f.publish(g, g.report(false))
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
}

// crash kills gateway i after a delivered report and k more requests, which
// are lost; its next boot reports at once.
func (f *fleet) crash(i int, k uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.gws[i]
	f.publish(g, g.report(false))
	g.serve(k, 0)
	f.served.RequestsTotal += k
	f.lost.RequestsTotal += k
	g.newBoot(time.Now())
	f.publish(g, g.report(false))
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
}

// quiesce stops serving and losing reports: from now on every report
// carries the final counts.
func (f *fleet) quiesce() (want proto.Counters) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serving, f.lossy = false, false
	want.RequestsTotal = f.served.RequestsTotal - f.lost.RequestsTotal
	want.RequestsError = f.served.RequestsError - f.lost.RequestsError
	want.RequestsSuccess = want.RequestsTotal - want.RequestsError
	return want
}

// liveWatch checks every snapshot published live: per scope, seconds
// strictly increasing (so no second twice) and counters never lower; for
// the cluster, the arrival times, to measure gaps.
type liveWatch struct {
	t      *testing.T
	ch     chan *nats.Msg
	rollCh chan *nats.Msg
	last   map[string]proto.Snapshot
	perSec map[string]int // scope@second → times seen
	rolls  map[string]int // scope@minute (unix) → times seen
	rollup map[string]proto.Snapshot
	arrive []time.Time // cluster snapshots
	times  []time.Time // their snapshot times
	all    map[string][]proto.Snapshot
}

func watchLive(t *testing.T, nc *nats.Conn) *liveWatch {
	w := &liveWatch{t: t, ch: make(chan *nats.Msg, 1<<16), rollCh: make(chan *nats.Msg, 1024),
		last: map[string]proto.Snapshot{}, perSec: map[string]int{}, rolls: map[string]int{}, rollup: map[string]proto.Snapshot{},
		all: map[string][]proto.Snapshot{}}
	for subj, ch := range map[string]chan *nats.Msg{proto.SnapshotSubjectAll: w.ch, proto.RollupSubjectAll: w.rollCh} {
		sub, err := nc.ChanSubscribe(subj, ch)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *liveWatch) drain() {
	w.t.Helper()
	for {
		select {
		case m := <-w.rollCh:
			r, err := proto.DecodeSnapshot(m.Data)
			if err != nil {
				w.t.Fatalf("rollup does not decode: %v", err)
			}
			key := fmt.Sprintf("%s@%d", r.Scope, r.Time.Unix())
			w.rolls[key]++
			w.rollup[key] = r
			continue
		case m := <-w.ch:
			s, err := proto.DecodeSnapshot(m.Data)
			if err != nil {
				w.t.Fatalf("snapshot does not decode: %v", err)
			}
			scope := s.Scope.String()
			key := fmt.Sprintf("%s@%d", scope, s.Time.Unix())
			if w.perSec[key]++; w.perSec[key] > 1 {
				w.t.Fatalf("second %s published twice", key)
			}
			if p, ok := w.last[scope]; ok {
				if !s.Time.After(p.Time) {
					w.t.Fatalf("%s: snapshot for %v after one for %v", scope, s.Time, p.Time)
				}
				if s.RequestsTotal < p.RequestsTotal || s.RequestsSuccess < p.RequestsSuccess || s.RequestsError < p.RequestsError {
					w.t.Fatalf("%s counters went down at %v: %d/%d/%d after %d/%d/%d", scope, s.Time,
						s.RequestsTotal, s.RequestsSuccess, s.RequestsError, p.RequestsTotal, p.RequestsSuccess, p.RequestsError)
				}
			}
			w.last[scope] = s
			w.all[scope] = append(w.all[scope], s)
			if s.Scope == proto.ClusterScope() {
				w.arrive = append(w.arrive, time.Now())
				w.times = append(w.times, s.Time)
			}
			continue
		default:
		}
		return
	}
}

func (w *liveWatch) clusterCount() int { w.drain(); return len(w.arrive) }

// waitArrivalAfter waits for a cluster snapshot to arrive after t.
func (w *liveWatch) waitArrivalAfter(t time.Time) {
	w.t.Helper()
	wait.For(w.t, 10*time.Second, "a cluster snapshot", func() bool {
		w.drain()
		return len(w.arrive) > 0 && w.arrive[len(w.arrive)-1].After(t)
	})
}

// gaps are the longest pause between two cluster snapshots arriving after
// index from, and the longest step between their snapshot times.
func (w *liveWatch) gaps(from int) (arrival, times time.Duration) {
	w.drain()
	for i := max(from, 1); i < len(w.arrive); i++ {
		arrival = max(arrival, w.arrive[i].Sub(w.arrive[i-1]))
		times = max(times, w.times[i].Sub(w.times[i-1]))
	}
	return arrival, times
}

// failover kills (or, gracefully, stops) the leader, waits for snapshots
// from the new one, and checks and logs the pause.
func failover(t *testing.T, c *cluster, w *liveWatch, what string, graceful bool, afterKill ...func()) time.Duration {
	t.Helper()
	old := c.leader(10 * time.Second)
	from := w.clusterCount()
	start := time.Now()
	if graceful {
		c.stop(old)
	} else {
		old.nc.Close() // kill -9: from now on nothing it does reaches anyone
		for _, f := range afterKill {
			f()
		}
	}
	next := c.leader(10*time.Second, old)
	took := time.Since(start)
	w.waitArrivalAfter(time.Now())
	resume := w.arrive[len(w.arrive)-1].Sub(start)
	if !graceful {
		c.stop(old) // reap it
	}
	arrival, times := w.gaps(from)
	t.Logf("%s: %s → %s: leading %v and publishing %v after the %s; longest pause %v live, %v in snapshot times",
		what, old.a.ID(), next.a.ID(), took.Round(time.Millisecond), resume.Round(time.Millisecond),
		map[bool]string{true: "stop", false: "kill"}[graceful], arrival.Round(time.Millisecond), times)
	if resume > 3*time.Second || times > 3*time.Second {
		t.Errorf("%s: snapshots resumed %v after the leader went (step in snapshot times %v), want at most 3s", what, resume, times)
	}
	return resume
}

// waitTotals waits until the live cluster totals equal want.
func waitTotals(t *testing.T, w *liveWatch, want proto.Counters) {
	t.Helper()
	var got proto.Snapshot
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.drain()
		got = w.last["cluster"]
		if got.RequestsTotal == want.RequestsTotal && got.RequestsError == want.RequestsError && got.RequestsSuccess == want.RequestsSuccess {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster totals %d/%d/%d, want exactly %d/%d/%d (total/success/error)",
				got.RequestsTotal, got.RequestsSuccess, got.RequestsError, want.RequestsTotal, want.RequestsSuccess, want.RequestsError)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// TestHighAvailability runs three aggregators while three gateways report,
// with a report in seven dropped and one in five sent twice, and goes through
// every failover the issue names: a leader killed; a gateway restarted and a
// gateway crashed right before the leader is killed; a graceful hand-over;
// and a restart of every aggregator. Throughout, no cluster counter goes
// down, no second is published twice, and live snapshots never pause more
// than 3s; in the end the totals are exactly what the gateways served, less
// what the crash lost, and the history stream agrees.
func TestHighAvailability(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	begin := time.Now().Truncate(time.Second)
	w := watchLive(t, nc)
	f := startFleet(t, nc, "eu/gw-1", "eu/gw-2", "us/gw-3")
	c := newCluster(t, node, time.Now, haTTL)
	for range 3 {
		c.start()
	}
	c.leader(10 * time.Second)
	w.waitArrivalAfter(time.Now())

	failover(t, c, w, "kill", false)
	c.start()

	// A gateway restarts and another crashes just after the leader persisted
	// its state: the old boots' last counts reach the old leader and the
	// followers' replay buffers, but not the persisted state.
	l := c.leader(10 * time.Second)
	written := l.a.stateWritten.Load()
	wait.For(t, 5*time.Second, "a state write", func() bool { return l.a.stateWritten.Load() != written })
	f.restart(0)
	f.crash(2, 7)
	wait.For(t, 5*time.Second, "the leader to apply both", func() bool {
		l.a.mu.Lock()
		defer l.a.mu.Unlock()
		return l.a.merger.insts["gw-1"].boot == f.gws[0].boot && l.a.merger.insts["gw-3"].boot == f.gws[2].boot
	})
	failover(t, c, w, "kill right after gateway restarts", false, func() {
		// What the new leader will restore: normally without the new boots,
		// which only its replay buffer then holds.
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, StateBucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, StateKey)
		if err != nil {
			t.Fatal(err)
		}
		st, err := DecodeState(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range st.Instances {
			if is.Instance == "gw-1" || is.Instance == "gw-3" {
				t.Logf("persisted state at the kill: %s at boot %s (new boot persisted: %v)",
					is.Instance, is.BootID, is.BootID == f.gws[0].boot || is.BootID == f.gws[2].boot)
			}
		}
	})
	c.start()

	failover(t, c, w, "graceful hand-over", true)

	// Every aggregator stops; fresh ones continue from the persisted state.
	stopped := time.Now()
	for len(c.members) > 0 {
		c.stop(c.members[0])
	}
	c.start()
	c.start()
	restarted := time.Now()
	c.leader(10 * time.Second)
	w.waitArrivalAfter(time.Now())
	t.Logf("full restart: every aggregator stopped for %v", restarted.Sub(stopped).Round(time.Millisecond))

	want := f.quiesce()
	waitTotals(t, w, want)
	t.Logf("exact totals %d/%d/%d after %d reports dropped and %d doubled; %d requests lost to the crash",
		want.RequestsTotal, want.RequestsSuccess, want.RequestsError, f.dropped, f.doubled, f.lost.RequestsTotal)
	l = c.leader(10 * time.Second)
	for _, m := range c.members {
		if n := testutil.ToFloat64(m.a.metrics.heldBack); n != 0 {
			t.Errorf("%s held back %v snapshots: a new leader's totals trailed the published ones", m.a.ID(), n)
		}
		// Only the leader relays the gateways' own series.
		want := 0
		if m == l {
			want = 3 * 7 // three instances, seven series each
		}
		if n := testutil.CollectAndCount(m.a.GatewayCollector()); n != want {
			t.Errorf("%s (leader %v) exports %d gateway series, want %d", m.a.ID(), m == l, n, want)
		}
	}
	if n := testutil.ToFloat64(l.a.metrics.leaderChanges); n != 1 {
		t.Errorf("leader's leadership changes = %v, want 1", n)
	}

	// The history stream holds one snapshot per second, no step over 3s
	// except while no aggregator ran, counters never lower.
	checkHistory(t, nc, begin, stopped, restarted)
}

// TestFailoverWithDefaultLease measures failover with the default 2s lease:
// live snapshots resume, and snapshot times step, within 3s of a kill.
func TestFailoverWithDefaultLease(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	begin := time.Now().Truncate(time.Second)
	w := watchLive(t, nc)
	startFleet(t, nc, "eu/gw-1", "us/gw-2")
	c := newCluster(t, node, time.Now, 0)
	for range 3 {
		c.start()
	}
	c.leader(10 * time.Second)
	w.waitArrivalAfter(time.Now())
	var worst time.Duration
	for i := range 2 {
		worst = max(worst, failover(t, c, w, fmt.Sprintf("default lease, kill %d", i+1), false))
	}
	t.Logf("worst resume after a kill with the default lease: %v", worst.Round(time.Millisecond))
	checkHistory(t, nc, begin, time.Time{}, time.Time{})
}

// checkHistory checks the cluster's history since begin: one snapshot per
// second at most, counters never lower, no step over 3s except across
// [pauseFrom, pauseTo] (when no aggregator ran).
func checkHistory(t *testing.T, nc *nats.Conn, begin, pauseFrom, pauseTo time.Time) {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hist, err := history.Load(ctx, js, proto.ClusterScope(), begin, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var longest time.Duration
	for i := 1; i < len(hist); i++ {
		a, b := hist[i-1].Time, hist[i].Time
		step := b.Sub(a)
		if step <= 0 || hist[i].RequestsTotal < hist[i-1].RequestsTotal {
			t.Fatalf("history at %v: step %v, total %d after %d", b, step, hist[i].RequestsTotal, hist[i-1].RequestsTotal)
		}
		if !pauseFrom.IsZero() && a.Before(pauseTo.Add(time.Second)) && b.After(pauseFrom.Add(-time.Second)) {
			continue
		}
		longest = max(longest, step)
	}
	t.Logf("history: %d cluster snapshots, longest step %v", len(hist), longest)
	if longest > 3*time.Second {
		t.Errorf("history has a gap of %v", longest)
	}
}

// TestRollupsSpanFailover runs aggregators on a clock shifted to a few
// seconds before a minute boundary, kills the leader within the minute, and
// checks that the new leader publishes, once per scope, the rollup of the
// whole minute, old leader's seconds included, equal to Rollup of the
// snapshots published live.
func TestRollupsSpanFailover(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	wall := time.Now()
	minute := wall.Truncate(time.Minute).Add(-time.Minute) // the minute to roll up, on the shifted clock
	// The shifted clock starts 20 s before the minute ends, which leaves the
	// followers and the failover time to finish inside it on a loaded host.
	offset := minute.Add(time.Minute - 20*time.Second).Sub(wall)
	if offset < -30*time.Second {
		// Keep the shift within ±30 s: the gateways stamp their boots on
		// the wall clock, and a boot more than MaxStartSkew ahead of the
		// aggregators' clock is rejected (no instance or region would
		// ever be merged: the test failed so at the end of a wall minute).
		minute, offset = minute.Add(time.Minute), offset+time.Minute
	}
	now := func() time.Time { return time.Now().Add(offset) }

	w := watchLive(t, nc)
	f := startFleet(t, nc, "eu/gw-1", "eu/gw-2", "us/gw-3")
	f.mu.Lock()
	f.lossy = false
	f.mu.Unlock()
	c := newCluster(t, node, now, haTTL)
	for range 3 {
		c.start()
	}
	old := c.leader(10 * time.Second)
	// The followers must have seen the leader publish every scope of the
	// minute before it is killed (a follower's book only knows the scopes
	// it saw published); how long that takes depends on the host's load.
	wait.For(t, 15*time.Second, "every follower to follow the minute's six scopes", func() bool {
		for _, m := range c.members {
			if m != old && openScopes(m.a, minute) != 6 {
				return false
			}
		}
		return true
	})
	if !now().Before(minute.Add(50 * time.Second)) {
		t.Fatalf("the followers took until %v to follow the minute: test machine too slow?", now())
	}
	failover(t, c, w, "kill within the minute", false)
	// Aggregators start together, so the new leader may have subscribed
	// after the old one published its first second: its rollups start
	// where its book does.
	next := c.leader(10*time.Second, old)
	first := map[string]time.Time{}
	next.a.book.mu.Lock()
	for scope, sb := range next.a.book.scopes {
		for _, rb := range sb.open {
			if rb.minute == minute.Unix() {
				first[scope] = rb.first.Time
			}
		}
	}
	next.a.book.mu.Unlock()
	if len(first) != 6 {
		t.Fatalf("the new leader follows %d scopes of the minute before it ends (%v), want 6: test machine too slow?", len(first), now())
	}

	key := fmt.Sprintf("cluster@%d", minute.Unix())
	for deadline := time.Now().Add(25 * time.Second); ; {
		if w.drain(); w.rolls[key] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster rollup of %v by %v; aggregators:\n%s", minute.Format("15:04"), now().Format("15:04:05.000"), c.describe())
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	// The instance rollups follow, paced (rollwriter.go); then a moment for
	// any duplicate to show.
	wait.For(t, 10*time.Second, "every scope's rollup to arrive", func() bool {
		w.drain()
		n := 0
		for k := range w.rolls {
			if strings.HasSuffix(k, fmt.Sprintf("@%d", minute.Unix())) {
				n++
			}
		}
		return n >= 6
	})
	flushed := time.Now()
	wait.For(t, 5*time.Second, "a moment for duplicates", func() bool { w.drain(); return time.Since(flushed) > 200*time.Millisecond })
	scopes := 0
	for scope, all := range w.all {
		var seen []proto.Snapshot
		for _, s := range all {
			if !s.Time.Before(first[scope]) {
				seen = append(seen, s)
			}
		}
		want, ok := Rollup(minute, nil, seen)
		if !ok {
			continue
		}
		scopes++
		k := fmt.Sprintf("%s@%d", scope, minute.Unix())
		if w.rolls[k] != 1 {
			t.Errorf("%s: rollup published %d times", k, w.rolls[k])
			continue
		}
		if got := w.rollup[k]; got != want {
			t.Errorf("%s: rollup\n got %+v\nwant %+v (from %d snapshots)", k, got, want, len(minuteSnaps(seen, minute)))
		}
	}
	if scopes != 6 {
		t.Errorf("rollups for %d scopes, want 6 (cluster, 2 regions, 3 instances)", scopes)
	}
	cl := minuteSnaps(w.all["cluster"], minute)
	t.Logf("cluster rollup of %v from %d snapshots across the failover (the new leader's from %v): %+v",
		minute.Format("15:04"), len(cl), first["cluster"].Format("15:04:05"), w.rollup[key])

	// The stream holds each once.
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wait.For(t, 10*time.Second, "rollups in the stream", func() bool {
		s, err := js.Stream(ctx, proto.RollupStream)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(proto.RollupSubjectAll))
		if err != nil {
			return false
		}
		for subj, n := range info.State.Subjects {
			if n != 1 {
				t.Fatalf("%s holds %d rollups", subj, n)
			}
		}
		return len(info.State.Subjects) == 6 && info.State.Msgs == 6
	})
}

func minuteSnaps(all []proto.Snapshot, minute time.Time) []proto.Snapshot {
	var out []proto.Snapshot
	for _, s := range all {
		if !s.Time.Before(minute) && s.Time.Before(minute.Add(time.Minute)) {
			out = append(out, s)
		}
	}
	return out
}

// openScopes is how many scopes a's book is building a rollup of minute for.
func openScopes(a *Aggregator, minute time.Time) int {
	a.book.mu.Lock()
	defer a.book.mu.Unlock()
	n := 0
	for _, sb := range a.book.scopes {
		for _, rb := range sb.open {
			if rb.minute == minute.Unix() {
				n++
			}
		}
	}
	return n
}
