// Package integration runs Meridian end to end in one test process: an
// embedded NATS server with JetStream, gateways in two regions in front of
// the demo upstream, an aggregator and an edge, driven by the real load
// generator and read over real WebSocket connections. The dev test also
// builds and runs the `meridian` binary itself.
package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/gateway/demo"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// cluster is a running Meridian with every role in this process.
type cluster struct {
	t        *testing.T
	node     *natsnode.Node
	nc       *nats.Conn // the test's own connection
	upstream *url.URL
	agg      *aggregator.Aggregator // the first aggregator
	aggs     []*runningAggregator
	opts     clusterOptions
	edge     *edge.Edge
	edgeReg  *prometheus.Registry
	wsURL    string
	httpURL  string

	mu       sync.Mutex
	gateways map[string]*runningGateway
}

type runningGateway struct {
	node   *gateway.Node
	url    string
	cancel context.CancelFunc
	done   chan error
}

type clusterOptions struct {
	edge        edge.Config // tweaks: intervals, limits
	aggregators int         // default 1
	leaderTTL   time.Duration
	// onRequest, if set, sees every request each gateway records, with the
	// exact duration it recorded.
	onRequest func(instance string, status int, d time.Duration)
	avgWindow time.Duration // the aggregators' --avg-window; default theirs
	// shards, when set, replaces the aggregators: one per entry, with its
	// ID, Tier and Regions (see shard_test.go).
	shards []aggregator.Config
}

// runningAggregator is one aggregator with its own NATS connection, so a
// test can kill it (connection gone, no resignation) or stop it gracefully.
type runningAggregator struct {
	agg    *aggregator.Aggregator
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
}

// startCluster starts NATS, the demo upstream, an aggregator, an edge and
// the gateways gw-eu-1 and gw-us-1, and stops them all at cleanup, in the
// reverse order.
func startCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	node, nc := natstest.StartTest(t)
	c := &cluster{t: t, node: node, nc: nc, gateways: map[string]*runningGateway{}, opts: opts}

	up := httptest.NewServer(demo.Handler(demo.Config{Latency: demo.Uniform(time.Millisecond, 5*time.Millisecond)}))
	t.Cleanup(up.Close)
	c.upstream, _ = url.Parse(up.URL)

	for i := 0; i < max(opts.aggregators, 1) && len(opts.shards) == 0; i++ {
		c.startAggregator()
	}
	for _, sc := range opts.shards {
		c.startAggregatorWith(sc)
	}
	c.agg = c.aggs[0].agg

	c.startEdge("127.0.0.1:0")
	c.wsURL = "ws://" + c.edge.Addr().String() + "/ws/metrics"
	c.httpURL = "http://" + c.edge.Addr().String()

	c.startGateway("eu", "gw-eu-1")
	c.startGateway("us", "gw-us-1")
	wait.For(t, 15*time.Second, "edge ready with live snapshots", func() bool { _, ok := c.edge.Ready(); return ok })
	return c
}

// startEdge starts an edge listening on addr, stopped at cleanup.
func (c *cluster) startEdge(addr string) {
	c.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	ecfg := c.opts.edge
	ecfg.Listener, ecfg.NATS, ecfg.Logger = ln, connect(c.t, c.node), quietLogger()
	c.edgeReg = prometheus.NewRegistry()
	ecfg.Registerer = c.edgeReg
	e, err := edge.New(ecfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.edge = e
	runUntilCleanup(c.t, "edge", e.Run, e.Shutdown)
}

// restartEdge shuts the edge down (its clients get 1001 "server shutting
// down") and starts a new one on the same address, as a restarted process
// would be; it returns once the new edge is ready.
func (c *cluster) restartEdge() {
	c.t.Helper()
	addr := c.edge.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.edge.Shutdown(ctx); err != nil {
		c.t.Fatalf("shut down edge: %v", err)
	}
	c.startEdge(addr)
	wait.For(c.t, 15*time.Second, "restarted edge ready", func() bool { _, ok := c.edge.Ready(); return ok })
}

// startAggregator starts one more aggregator; all are stopped at cleanup.
func (c *cluster) startAggregator() *runningAggregator {
	c.t.Helper()
	return c.startAggregatorWith(aggregator.Config{ID: fmt.Sprintf("agg-%d", len(c.aggs)+1)})
}

// startAggregatorWith starts one more aggregator with cfg's ID, Tier and
// Regions.
func (c *cluster) startAggregatorWith(cfg aggregator.Config) *runningAggregator {
	c.t.Helper()
	nc, err := nats.Connect(c.node.ClientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	agg, err := aggregator.New(aggregator.Config{
		NATS: nc, Logger: quietLogger(), ID: cfg.ID, Merge: aggregator.MergerConfig{AvgWindow: c.opts.avgWindow},
		Leader: leader.Config{TTL: c.opts.leaderTTL}, Tier: cfg.Tier, Regions: cfg.Regions,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAggregator{agg: agg, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		if err := agg.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			c.t.Errorf("aggregator %s: Run: %v", agg.ID(), err)
		}
		close(ra.done)
	}()
	c.aggs = append(c.aggs, ra)
	c.t.Cleanup(func() { c.stopAggregator(ra, false) })
	return ra
}

// stopAggregator stops ra gracefully (state persisted, lease resigned), or
// kills it: its NATS connection closes first, so it can neither persist nor
// resign and the lease must expire.
func (c *cluster) stopAggregator(ra *runningAggregator, kill bool) {
	if kill {
		ra.nc.Close()
	}
	ra.cancel()
	select {
	case <-ra.done:
	case <-time.After(15 * time.Second):
		c.t.Errorf("aggregator %s did not stop", ra.agg.ID())
	}
	ra.nc.Close()
}

// leader is the aggregator leading now, or nil.
func (c *cluster) leader() *runningAggregator {
	for _, ra := range c.aggs {
		if !ra.nc.IsClosed() && ra.agg.Leader() {
			return ra
		}
	}
	return nil
}

func connect(t *testing.T, node *natsnode.Node) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// runUntilCleanup runs fn in a goroutine and stops it at cleanup.
func runUntilCleanup(t *testing.T, name string, run func(context.Context) error, shutdown func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := shutdown(sctx); err != nil {
			t.Errorf("shut down %s: %v", name, err)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Run: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return after shutdown", name)
		}
	})
}

// startGateway starts (or restarts, with a new boot id) a gateway instance.
func (c *cluster) startGateway(region, instance string) *runningGateway {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	gnc := connect(c.t, c.node)
	gcfg := gateway.Config{
		Upstream: c.upstream, Listener: ln, Region: region, Instance: instance, NATS: gnc,
		PublishInterval: 200 * time.Millisecond, Logger: quietLogger(),
	}
	if on := c.opts.onRequest; on != nil {
		gcfg.OnRequest = func(status int, d time.Duration) { on(instance, status, d) }
	}
	g, err := gateway.New(gcfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rg := &runningGateway{node: g, url: "http://" + ln.Addr().String() + "/", cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- g.Run(ctx) }()
	c.mu.Lock()
	c.gateways[instance] = rg
	c.mu.Unlock()
	c.t.Cleanup(func() { c.stopGateway(instance) })
	return rg
}

// stopGateway shuts a gateway down gracefully (drain + final report).
func (c *cluster) stopGateway(instance string) {
	c.mu.Lock()
	rg := c.gateways[instance]
	delete(c.gateways, instance)
	c.mu.Unlock()
	if rg == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rg.node.Shutdown(ctx); err != nil {
		c.t.Errorf("shut down gateway %s: %v", instance, err)
	}
	rg.cancel()
	if err := <-rg.done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, gateway.ErrClosed) {
		c.t.Errorf("gateway %s: Run: %v", instance, err)
	}
}

func (c *cluster) gatewayURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, g := range c.gateways {
		out = append(out, g.url)
	}
	return out
}

// dial opens a WebSocket to the edge, closed at cleanup.
func (c *cluster) dial(ctx context.Context) *wsclient.Client {
	c.t.Helper()
	ws, err := wsclient.Dial(ctx, c.wsURL)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ws.Close() })
	return ws
}

// snapshotWhere reads Snapshot events until one satisfies cond.
func snapshotWhere(t *testing.T, ctx context.Context, ws *wsclient.Client, what string, cond func(proto.Event) bool) proto.Event {
	t.Helper()
	var last proto.Event
	for {
		ev, err := ws.NextOfType(ctx, proto.EventSnapshot)
		if err != nil {
			t.Fatalf("waiting for a snapshot with %s (last: %v): %v", what, last.Values, err)
		}
		last = ev
		if cond(ev) {
			return ev
		}
	}
}
