package scale

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
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
	nats  *proc
	mon   string // NATS monitoring host:port
	url   string // NATS client URL
	aggs  []*proc
	edge  *proc
	procs []*proc // in start order; stopped in reverse
}

func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(stopGrace)
	}
}

// Run starts a NATS server, cfg.Aggregators aggregators and an edge as
// separate processes of the Meridian binary, drives them with cfg.Instances
// simulated gateway instances publishing a report every second, and
// measures the window (see Report). It stops every process and goroutine it
// started before it returns.
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
	cl := &cluster{}
	defer cl.stop()
	if err := cl.start(ctx, cfg, dir); err != nil {
		return Report{}, err
	}

	obsConn, err := nats.Connect(cl.url, nats.Name("scale-observer"))
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
	if err := waitFor(ctx, cfg.ReadyWait, func() bool { _, ok := obs.cluster(); return ok }); err != nil {
		return Report{}, fmt.Errorf("wait for the first cluster snapshot: %w", err)
	}
	if err := cl.edge.waitReady(ctx, cfg.ReadyWait); err != nil {
		return Report{}, err
	}
	idle, err := cl.usage()
	if err != nil {
		return Report{}, err
	}

	simConn, err := nats.Connect(cl.url, nats.Name("scale-gateways"), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return Report{}, fmt.Errorf("connect simulator: %w", err)
	}
	defer simConn.Close()
	regions := make([]string, cfg.Regions)
	for i := range regions {
		regions[i] = "r" + strconv.Itoa(i)
	}
	sim := NewSimulator(simConn, cfg.Instances, regions, cfg.Publishers, "scale-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	simCtx, stopSim := context.WithCancel(ctx)
	var simWG sync.WaitGroup
	var simErr error
	simWG.Go(func() { simErr = sim.Run(simCtx) })
	defer func() {
		stopSim()
		simWG.Wait()
	}()
	log.Info("load started", "instances", cfg.Instances, "regions", cfg.Regions, "warmup", cfg.Warmup)

	// The window is whole seconds, so every second in it is due once.
	from := time.Now().Add(cfg.Warmup).Truncate(time.Second).Add(time.Second)
	to := from.Add(cfg.Duration.Truncate(time.Second))
	obs.setWindow(from.Unix(), to.Unix())
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
	log.Info("window measured", "from", from.Format(time.TimeOnly), "seconds", to.Sub(from).Seconds())
	// The window's last second is published just after it ends.
	if err := sleepUntil(ctx, to.Add(2*time.Second)); err != nil {
		return Report{}, err
	}
	rep := newReport(cfg, idle, start, end, obs)

	if cfg.Aggregators > 1 {
		fo, err := cl.failover(ctx, cfg, obs)
		if err != nil {
			return Report{}, err
		}
		rep.Failover = &fo
		log.Info("failover measured", "gap_ms", fo.GapMs)
	}
	stopSim()
	simWG.Wait()
	if simErr != nil {
		return Report{}, simErr
	}
	want := sim.Totals()
	rep.Exact = settleExact(ctx, cfg.Settle, obs, want)
	obs.mu.Lock()
	rep.Faults = append([]string(nil), obs.faults...)
	rep.BadSnapshots = obs.bad
	obs.mu.Unlock()
	return rep, nil
}

// start launches NATS, the aggregators and the edge and waits until each is
// ready.
func (c *cluster) start(ctx context.Context, cfg Config, dir string) error {
	addrs := make([]string, 4+cfg.Aggregators)
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		addrs[i] = a
	}
	client, mon, natsAdmin, edgeAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	_, monPort, err := net.SplitHostPort(mon)
	if err != nil {
		return fmt.Errorf("monitor address: %w", err)
	}
	c.url, c.mon = "nats://"+client, mon
	c.nats, err = startProc("nats", cfg.Command("nats", "--listen", client, "--data-dir", dir+"/nats",
		"--name", "scale-nats", "--monitor-port", monPort, "--metrics-listen", natsAdmin, "--lame-duck", "0s"), natsAdmin, cfg.Output)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, c.nats)
	if err := c.nats.waitReady(ctx, cfg.ReadyWait); err != nil {
		return err
	}
	for i := range cfg.Aggregators {
		name := "aggregator-" + strconv.Itoa(i+1)
		args := []string{"aggregator", "--nats-url", c.url, "--listen", addrs[4+i], "--id", "scale-" + name}
		if cfg.InstanceSnapshots != "" {
			args = append(args, "--instance-snapshots", cfg.InstanceSnapshots)
		}
		p, err := startProc(name, cfg.Command(args...), addrs[4+i], cfg.Output)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.aggs = append(c.aggs, p)
		if err := p.waitReady(ctx, cfg.ReadyWait); err != nil {
			return err
		}
	}
	// The edge serves /readyz on its WebSocket port; it is ready once it has
	// a live snapshot, which Run waits for. Anonymous, with /metrics on that
	// port too (no admin listener): a measurement on loopback, not a
	// deployment.
	c.edge, err = startProc("edge", cfg.Command("edge", "--nats-url", c.url, "--listen", edgeAddr,
		"--anonymous", "--admin-listen", ""), edgeAddr, cfg.Output)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, c.edge)
	return nil
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

// sample is everything measured at one edge of the window.
type sample struct {
	At          time.Time
	Usage       usages
	Varz        varz
	StreamMsgs  uint64
	StreamBytes uint64
	Sim         SimTotals
	Aggs        []map[string]float64 // each aggregator's /metrics
	Machine     machine
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
	if s.Varz, err = readVarz(ctx, c.mon); err != nil {
		return s, err
	}
	if s.StreamMsgs, s.StreamBytes, err = streamBytes(ctx, js); err != nil {
		return s, err
	}
	for _, a := range c.aggs {
		m, err := scrape(ctx, a.admin)
		if err != nil {
			return s, fmt.Errorf("%s: %w", a.name, err)
		}
		s.Aggs = append(s.Aggs, m)
	}
	return s, nil
}

// failover kills the leading aggregator as a crash would and measures the
// time from the kill to the first cluster snapshot of a later second.
func (c *cluster) failover(ctx context.Context, cfg Config, obs *observer) (Failover, error) {
	leader := -1
	for i, a := range c.aggs {
		m, err := scrape(ctx, a.admin)
		if err != nil {
			return Failover{}, fmt.Errorf("%s: %w", a.name, err)
		}
		if m["meridian_aggregator_leader"] == 1 {
			leader = i
		}
	}
	if leader < 0 {
		return Failover{Error: "no aggregator said it leads"}, nil
	}
	last, _ := obs.cluster()
	killed := time.Now()
	c.aggs[leader].kill()
	var first arrival
	err := waitFor(ctx, cfg.Settle, func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		for _, a := range obs.arrived {
			if a.At.After(killed) && a.Second > last.Time.Unix() {
				first = a
				return true
			}
		}
		return false
	})
	if ctx.Err() != nil {
		return Failover{}, ctx.Err()
	}
	if err != nil {
		// A figure, not a harness failure: the survivor did not publish.
		return Failover{Killed: c.aggs[leader].name, Error: fmt.Sprintf("no cluster snapshot within %s of the kill", cfg.Settle)}, nil
	}
	// Let the new leader run under load for a few seconds.
	if err := sleepUntil(ctx, time.Now().Add(3*time.Second)); err != nil {
		return Failover{}, err
	}
	return Failover{
		Killed: c.aggs[leader].name, GapMs: msOf(first.At.Sub(killed)),
		SecondsSkipped: int(first.Second - last.Time.Unix() - 1),
	}, nil
}

// settleExact waits until the cluster snapshot shows what the simulator
// published, or until timeout.
func settleExact(ctx context.Context, timeout time.Duration, obs *observer, want SimTotals) Exactness {
	var got proto.Snapshot
	err := waitFor(ctx, timeout, func() bool {
		got, _ = obs.cluster()
		return got.RequestsTotal == want.Total && got.RequestsSuccess == want.Success && got.RequestsError == want.Errors
	})
	return Exactness{
		Exact: err == nil, WantTotal: want.Total, GotTotal: got.RequestsTotal,
		WantErrors: want.Errors, GotErrors: got.RequestsError,
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
