package scale

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// stopGrace is how long a child may take to stop after SIGTERM.
const stopGrace = 15 * time.Second

// cluster is the set of running children.
type cluster struct {
	nodes    []natsNode
	groups   []*group
	edge     *proc
	edgeAddr string
	edgeNode int     // index of the edge's NATS node (mod nodes)
	procs    []*proc // in start order; stopped in reverse
}

func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(stopGrace)
	}
}

// Run starts cfg.NATSNodes NATS servers, the aggregator groups and an edge
// as separate processes of the Meridian binary, drives them with
// cfg.Instances simulated gateway instances publishing a report every
// second (and cfg.Subscribers WebSocket clients of the edge), and measures
// the window (see Report). It stops every process and goroutine it started
// before it returns.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	log := cfg.Logger
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "meridian-scale-")
		if err != nil {
			return Report{}, fmt.Errorf("make data directory: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	regions := make([]string, cfg.Regions)
	for i := range regions {
		regions[i] = "r" + strconv.Itoa(i)
	}
	cl := &cluster{groups: planGroups(cfg, regions)}
	defer cl.stop()
	if err := cl.startNATS(ctx, cfg, dir); err != nil {
		return Report{}, err
	}
	if err := cl.startAggregators(ctx, cfg); err != nil {
		return Report{}, err
	}
	if err := cl.startEdge(cfg); err != nil {
		return Report{}, err
	}

	obsConn, err := nats.Connect(cl.nodes[0].url, nats.Name("scale-observer"))
	if err != nil {
		return Report{}, fmt.Errorf("connect observer: %w", err)
	}
	defer obsConn.Close()
	obs := newObserver()
	subs, err := obs.subscribe(obsConn)
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	if err != nil {
		return Report{}, err
	}
	js, err := jetstream.New(obsConn)
	if err != nil {
		return Report{}, fmt.Errorf("open jetstream: %w", err)
	}
	// The leader publishes empty snapshots before any report; the edge is
	// ready once it has one.
	if err := waitFor(ctx, cfg.ReadyWait, func() bool { _, ok := obs.last(proto.ClusterScope()); return ok }); err != nil {
		return Report{}, fmt.Errorf("wait for the first cluster snapshot: %w", err)
	}
	if err := cl.edge.waitReady(ctx, cfg.ReadyWait); err != nil {
		return Report{}, err
	}
	// A cluster's JetStream elects its meta leader after the nodes are
	// ready: until then the aggregators publish live only and retry
	// creating the streams. Measure from when history is kept and every
	// group has a leader.
	var missing string
	if err := waitFor(ctx, cfg.ReadyWait, func() bool { missing = cl.settled(ctx, js); return missing == "" }); err != nil {
		return Report{}, fmt.Errorf("wait for the history stream and a leader of every group (%s): %w", missing, err)
	}
	idle := sample{}
	if idle.Usage, err = cl.usage(); err != nil {
		return Report{}, err
	}
	if idle.Aggs, err = cl.scrapeAggregators(ctx); err != nil {
		return Report{}, err
	}

	var simConns []*nats.Conn
	defer func() {
		for _, nc := range simConns {
			nc.Close()
		}
	}()
	for _, node := range cl.nodes {
		nc, err := nats.Connect(node.url, nats.Name("scale-gateways"), nats.ReconnectBufSize(64<<20))
		if err != nil {
			return Report{}, fmt.Errorf("connect simulator: %w", err)
		}
		simConns = append(simConns, nc)
	}
	sim := NewSimulator(simConns, cfg.Instances, regions, cfg.Publishers, "scale-"+strconv.FormatInt(time.Now().UnixNano(), 36), cfg.HistogramBuckets)
	simCtx, stopSim := context.WithCancel(ctx)
	var simWG sync.WaitGroup
	var simErr error
	simWG.Go(func() { simErr = sim.Run(simCtx) })
	defer func() {
		stopSim()
		simWG.Wait()
	}()
	loadStart := time.Now()
	log.Info("load started", "instances", cfg.Instances, "regions", cfg.Regions, "warmup", cfg.Warmup)

	var ws *subscribers
	if cfg.Subscribers > 0 {
		followedN := max(cfg.FollowedInstances, 0)
		ws = newSubscribers(ctx, cl.edgeAddr, cfg.Phase, followedScopes(cfg.Instances, regions, followedN))
		defer ws.close()
		// Every instance has reported once a second into the load, so the
		// edge can find the followed ones.
		if err := sleepUntil(ctx, loadStart.Add(time.Second)); err != nil {
			return Report{}, err
		}
		ws.connect(cfg.Subscribers)
		log.Info("subscribers connected", "took", time.Since(loadStart).Round(time.Millisecond))
	}

	// The window is whole seconds, so every second in it is due once.
	from := loadStart.Add(cfg.Warmup)
	if now := time.Now(); now.After(from) {
		from = now // the subscribers took longer than the warm-up
	}
	from = from.Truncate(time.Second).Add(time.Second)
	to := from.Add(cfg.Duration.Truncate(time.Second))
	obs.setWindow(from.Unix(), to.Unix(), sim.LatencyWant())
	if ws != nil {
		ws.setWindow(from, to)
	}
	if err := sleepUntil(ctx, from); err != nil {
		return Report{}, err
	}
	start, err := cl.sample(ctx, js, sim)
	if err != nil {
		return Report{}, err
	}
	if err := sleepUntil(ctx, to); err != nil {
		return Report{}, err
	}
	end, err := cl.sample(ctx, js, sim)
	if err != nil {
		return Report{}, err
	}
	if end.State, err = readState(ctx, js); err != nil {
		return Report{}, err
	}
	log.Info("window measured", "from", from.Format(time.TimeOnly), "seconds", to.Sub(from).Seconds())
	// The window's last second is published just after it ends, and
	// delivered to the subscribers at their phase after that.
	if err := sleepUntil(ctx, to.Add(2*time.Second)); err != nil {
		return Report{}, err
	}
	rep := newReport(cfg, cl, idle, start, end, obs)
	if ws != nil {
		s := ws.report(cfg.Subscribers, int(to.Sub(from)/time.Second))
		rep.Subscribers = &s
		rep.followedDue()
	}

	if cfg.Aggregators > 1 {
		// In sharded mode a region shard's leader first (timed by its first
		// region's snapshots), then the cluster tier's.
		for _, g := range cl.failoverGroups() {
			fo, err := cl.failover(ctx, cfg, obs, g)
			if err != nil {
				return Report{}, err
			}
			rep.Failovers = append(rep.Failovers, fo)
			log.Info("failover measured", "group", g.Name, "gap_ms", fo.GapMs, "error", fo.Error)
		}
	}
	stopSim()
	simWG.Wait()
	if simErr != nil {
		return Report{}, simErr
	}
	rep.Exact = settleExact(ctx, cfg.Settle, obs, sim.Totals())
	obs.mu.Lock()
	rep.Faults = append([]string(nil), obs.faults...)
	rep.BadSnapshots = obs.bad
	obs.mu.Unlock()
	if ws != nil {
		// Contract violations seen by a client during the failovers and
		// the settling count too.
		ws.close()
		s := ws.report(cfg.Subscribers, int(to.Sub(from)/time.Second))
		rep.Subscribers.Faults, rep.Subscribers.Lost = s.Faults, s.Lost
		rep.Subscribers.ErrorEventsAfter = s.ErrorEventsAfter
	}
	return rep, nil
}

// settled returns "" once the history stream exists and every group has a
// leader with its streams ready, else what is still missing.
func (c *cluster) settled(ctx context.Context, js jetstream.JetStream) string {
	if _, _, err := streamBytes(ctx, js); err != nil {
		return err.Error()
	}
	for _, g := range c.groups {
		led := false
		var states []string
		for _, a := range g.aggs {
			m, err := scrape(ctx, a.admin)
			if err != nil {
				states = append(states, err.Error())
				continue
			}
			if m[metricLeader] == 1 && m[metricStreamReady] == 1 {
				led = true
			}
			states = append(states, fmt.Sprintf("%s leader %.0f, streams ready %.0f", a.name, m[metricLeader], m[metricStreamReady]))
		}
		if !led {
			return g.Name + ": " + strings.Join(states, "; ")
		}
	}
	return ""
}

// failoverGroups are the groups whose leader is killed: the single tier,
// or the first region shard and then the cluster tier.
func (c *cluster) failoverGroups() []*group {
	if len(c.groups) == 1 {
		return c.groups
	}
	return []*group{c.groups[0], c.groups[len(c.groups)-1]}
}

// usages are the children's usage at one moment, by name.
type usages map[string]usage

func (c *cluster) usage() (usages, error) {
	u := usages{}
	for _, p := range c.procs {
		v, err := readUsage(p.pid())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		u[p.name] = v
	}
	return u, nil
}

// sample is everything measured at one moment (an edge of the window, or
// before the load).
type sample struct {
	At          time.Time
	Usage       usages
	Varz        []varz // by NATS node
	StreamMsgs  uint64
	StreamBytes uint64
	Sim         SimTotals
	Aggs        map[string]map[string]float64 // each aggregator's /metrics, by name
	Machine     machine
	State       []StateEntry // at the window's end only
}

func (c *cluster) sample(ctx context.Context, js jetstream.JetStream, sim *Simulator) (sample, error) {
	s := sample{At: time.Now(), Sim: sim.Totals()}
	var err error
	if s.Usage, err = c.usage(); err != nil {
		return s, err
	}
	if s.Machine, err = readMachine(); err != nil {
		return s, err
	}
	for _, n := range c.nodes {
		v, err := readVarz(ctx, n.mon)
		if err != nil {
			return s, fmt.Errorf("%s: %w", n.name, err)
		}
		s.Varz = append(s.Varz, v)
	}
	if s.StreamMsgs, s.StreamBytes, err = streamBytes(ctx, js); err != nil {
		return s, err
	}
	s.Aggs, err = c.scrapeAggregators(ctx)
	return s, err
}

// scrapeAggregators reads every aggregator's /metrics.
func (c *cluster) scrapeAggregators(ctx context.Context) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	for _, g := range c.groups {
		for _, a := range g.aggs {
			m, err := scrape(ctx, a.admin)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", a.name, err)
			}
			out[a.name] = m
		}
	}
	return out, nil
}

// failover kills g's leading aggregator as a crash would and measures the
// time from the kill to the first snapshot of a later second of the scope
// g publishes (the cluster, or a region shard's first region).
func (c *cluster) failover(ctx context.Context, cfg Config, obs *observer, g *group) (Failover, error) {
	fo := Failover{Group: g.Name, Scope: proto.ClusterScope().String()}
	scope := proto.ClusterScope()
	if g.Tier == tierRegion {
		scope = proto.RegionScope(g.Regions[0])
		fo.Scope = scope.String()
	}
	// Between leases nobody leads for a moment (under overload, longer):
	// kill the leader once there is one.
	var leader *proc
	var scrapeErr error
	err := waitFor(ctx, cfg.Settle, func() bool {
		for _, a := range g.aggs {
			m, err := scrape(ctx, a.admin)
			if err != nil {
				scrapeErr = fmt.Errorf("%s: %w", a.name, err)
				return true
			}
			if m[metricLeader] == 1 {
				leader = a
				return true
			}
		}
		return false
	})
	switch {
	case ctx.Err() != nil:
		return Failover{}, ctx.Err()
	case scrapeErr != nil:
		return Failover{}, scrapeErr
	case err != nil:
		fo.Error = fmt.Sprintf("no aggregator said it leads within %s", cfg.Settle)
		return fo, nil
	}
	fo.Killed = leader.name
	killed := time.Now()
	leader.kill()
	var first arrival
	var prev int64
	err = waitFor(ctx, cfg.Settle, func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		var ok bool
		first, prev, ok = successor(obs.arrived[scope.String()], killed)
		return ok
	})
	if ctx.Err() != nil {
		return Failover{}, ctx.Err()
	}
	if err != nil {
		// A figure, not a harness failure: the survivor did not publish.
		fo.Error = fmt.Sprintf("no %s snapshot within %s of the kill", scope, cfg.Settle)
		return fo, nil
	}
	// Let the new leader run under load for a few seconds.
	if err := sleepUntil(ctx, time.Now().Add(3*time.Second)); err != nil {
		return Failover{}, err
	}
	fo.GapMs = msOf(first.At.Sub(killed))
	fo.SecondsSkipped = int(first.Second - prev - 1)
	return fo, nil
}

// successor finds, among a scope's arrivals in order of receipt, the first
// snapshot the new leader published after the old one was killed at killed:
// the first of a second after the kill's, which the old leader cannot have
// published (a second's snapshot is made once it began). Snapshots of the
// old leader still under way at the kill arrive after it too, so receipt
// alone does not tell. prev is the newest second that arrived before it.
func successor(arrivals []arrival, killed time.Time) (first arrival, prev int64, ok bool) {
	for _, a := range arrivals {
		if a.At.After(killed) && a.Second > killed.Unix() {
			return a, prev, true
		}
		prev = max(prev, a.Second)
	}
	return arrival{}, prev, false
}

// settleExact waits until the cluster and every region snapshot show what
// the simulator published, or until timeout.
func settleExact(ctx context.Context, timeout time.Duration, obs *observer, want SimTotals) Exactness {
	var got proto.Snapshot
	var off []string
	err := waitFor(ctx, timeout, func() bool {
		got, _ = obs.last(proto.ClusterScope())
		off = off[:0]
		for region, w := range want.Regions {
			r, _ := obs.last(proto.RegionScope(region))
			if r.RequestsTotal != w.Total || r.RequestsSuccess != w.Success || r.RequestsError != w.Errors {
				off = append(off, region)
			}
		}
		return got.RequestsTotal == want.Total && got.RequestsSuccess == want.Success && got.RequestsError == want.Errors && len(off) == 0
	})
	slices.Sort(off)
	return Exactness{
		Exact: err == nil, WantTotal: want.Total, GotTotal: got.RequestsTotal,
		WantErrors: want.Errors, GotErrors: got.RequestsError, RegionsOff: off,
	}
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %s: %w", timeout, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func sleepUntil(ctx context.Context, at time.Time) error {
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
