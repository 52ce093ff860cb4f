package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/dashboard"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/gateway/demo"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/proto"
)

type devConfig struct {
	Listen           string
	DataDir          string
	NATSListen       string
	Gateways         []string // region=addr
	DemoRPS          float64
	DemoErrorRatio   float64
	Namespace        string
	HistoryRetention time.Duration
	Edge             edge.Config
}

// DefaultDevListen keeps the anonymous dev edge on loopback.
const DefaultDevListen = "127.0.0.1:5900"

func devCommand() *cli.Command {
	var cfg devConfig
	return &cli.Command{
		Name:  "dev",
		Usage: "run a whole Meridian cluster in one process: NATS, aggregator, edge, two gateways, demo traffic",
		Description: "Starts an embedded NATS server with JetStream (data under --data-dir), one aggregator, one edge on\n" +
			"--listen, a demo upstream, one gateway per --gateways entry (default eu and us) in front of it, and\n" +
			"a light load (--demo-rps; 0 turns it off) so the numbers move. Every HTTP endpoint is on --listen:\n" +
			"the dashboard at /, /ws/metrics, /api/metrics/..., /metrics, /metrics/gateways, /healthz, /readyz.\n" +
			"Clients need no token and any Origin may connect (a page opened from a file or another local port\n" +
			"works): keep --listen on loopback.\n" +
			"Ctrl-C stops it cleanly.",
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: DefaultDevListen, Usage: "edge address: /ws/metrics and every HTTP endpoint (anonymous: keep it on loopback)", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "data-dir", Value: "./.meridian", Usage: "where JetStream keeps history", Destination: &cfg.DataDir},
			&cli.StringFlag{Name: "nats-listen", Value: net.JoinHostPort(natsnode.DefaultHost, strconv.Itoa(natsnode.DefaultPort)), Usage: "embedded NATS client address (other meridian processes can join here)", Destination: &cfg.NATSListen},
			&cli.StringSliceFlag{Name: "gateways", Value: cli.NewStringSlice("eu=127.0.0.1:8081", "us=127.0.0.1:8082"), Usage: "gateways to run, as region=listen-address"},
			&cli.Float64Flag{Name: "demo-rps", Value: 20, Usage: "demo requests per second across the gateways; 0 turns the demo load off", Destination: &cfg.DemoRPS},
			&cli.Float64Flag{Name: "demo-error-ratio", Value: 0.05, Usage: "fraction of each gateway's demo requests that ask the upstream for a 500", Destination: &cfg.DemoErrorRatio},
			&cli.StringFlag{Name: "namespace", Value: edge.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
			&cli.DurationFlag{Name: "history-retention", Value: history.DefaultMaxAge, Usage: "how long snapshots are kept in JetStream", Destination: &cfg.HistoryRetention},
		}, edgeFlags(&cfg.Edge)...)),
		Action: func(c *cli.Context) error {
			cfg.Gateways = c.StringSlice("gateways")
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			return runDev(c.Context, cfg, c.App.Writer, log)
		},
	}
}

type devGateway struct {
	region, instance string
	ln               net.Listener
}

// parseDevGateways listens for every region=addr entry; instances are named
// gw-<region>-<n>.
func parseDevGateways(specs []string) (gws []devGateway, err error) {
	defer func() {
		if err != nil {
			closeDevGateways(gws)
		}
	}()
	perRegion := map[string]int{}
	for _, spec := range specs {
		region, addr, ok := strings.Cut(spec, "=")
		if !ok {
			return gws, usageError("--gateways %q: want region=host:port", spec)
		}
		if err := proto.ValidateToken("region", region); err != nil {
			return gws, usageError("--gateways %q: %v", spec, err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return gws, fmt.Errorf("listen for gateway in %s: %w", region, err)
		}
		perRegion[region]++
		gws = append(gws, devGateway{region: region, instance: fmt.Sprintf("gw-%s-%d", region, perRegion[region]), ln: ln})
	}
	return gws, nil
}

// runDev starts every role in dependency order and stops them in reverse,
// so that the gateways' final reports reach the aggregator and clients get
// close frames before NATS goes away.
func runDev(ctx context.Context, cfg devConfig, out io.Writer, log *slog.Logger) error {
	// The gateways' ports first: a taken one fails before anything starts.
	gws, err := parseDevGateways(cfg.Gateways)
	if err != nil {
		return err
	}
	d := &devCluster{cfg: cfg, log: log, failed: make(chan error, 8)}
	defer d.stops.run(log)
	if err := d.startNATS(ctx); err != nil {
		closeDevGateways(gws)
		return err
	}
	e, err := d.startBroker()
	if err != nil {
		closeDevGateways(gws)
		return err
	}
	upURL, err := d.startUpstream()
	if err != nil {
		closeDevGateways(gws)
		return err
	}
	targets, err := d.startGateways(gws, upURL)
	if err != nil {
		return err
	}
	if cfg.DemoRPS > 0 && len(targets) > 0 {
		d.start("demo load", func(ctx context.Context) error {
			_, err := loadgen.Run(ctx, loadgen.Config{
				Targets: targets, RPS: cfg.DemoRPS, Continuous: true, ErrorRatio: cfg.DemoErrorRatio,
			})
			return err
		}, nil)
	}
	printDevURLs(out, cfg, d.node, e.Addr(), gws, targets, upURL)

	var runErr error
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "stopping…")
	case runErr = <-d.failed:
		log.Error("dev cluster stopping", "err", runErr)
	}
	d.stops.run(log)
	d.wg.Wait()
	return runErr
}

// devCluster is what runDev has started: every role pushes its stop on
// stops, and a role whose Run fails reports on failed.
type devCluster struct {
	cfg    devConfig
	log    *slog.Logger
	node   *natsnode.Node
	reg    *prometheus.Registry
	stops  stack
	wg     sync.WaitGroup
	failed chan error
}

// startNATS starts the embedded NATS server and the process's registry.
func (d *devCluster) startNATS(ctx context.Context) error {
	host, port, err := splitHostPort("--nats-listen", d.cfg.NATSListen)
	if err != nil {
		return err
	}
	if port == 0 {
		port = -1
	}
	node, err := natsnode.New(natsnode.Config{
		Name: "meridian-dev", Host: host, Port: port,
		StoreDir: filepath.Join(d.cfg.DataDir, "nats"), Logger: d.log.With("role", "nats"),
	})
	if err != nil {
		return err
	}
	if err := node.Start(ctx); err != nil {
		return err
	}
	d.stops.push("nats", node.Shutdown)
	d.node = node
	d.reg = newRegistry()
	d.reg.MustRegister(node.Collector(d.cfg.Namespace))
	return nil
}

// connect opens an in-process NATS connection for one role.
func (d *devCluster) connect(name string) (*nats.Conn, error) {
	nc, err := d.node.Connect(nats.Name(name), nats.MaxReconnects(-1))
	if err == nil {
		registerNATSClient(d.reg, d.cfg.Namespace, name, nc)
		d.stops.push(name+" connection", func(context.Context) error { nc.Close(); return nil })
	}
	return nc, err
}

// start runs a role until its stop (or the cluster's) ends it.
func (d *devCluster) start(name string, run func(context.Context) error, stop func(context.Context) error) {
	rctx, cancel := context.WithCancel(context.Background())
	d.wg.Go(func() {
		if err := run(rctx); err != nil && !errors.Is(err, context.Canceled) {
			d.failed <- fmt.Errorf("%s: %w", name, err)
		}
	})
	d.stops.push(name, func(sctx context.Context) error {
		var err error
		if stop != nil {
			err = stop(sctx)
		}
		cancel()
		return err
	})
}

// startBroker starts the aggregator and the edge, which serves every HTTP
// endpoint of the process on its port.
func (d *devCluster) startBroker() (*edge.Edge, error) {
	aggNC, err := d.connect("aggregator")
	if err != nil {
		return nil, err
	}
	agg, err := aggregator.New(aggregator.Config{
		NATS: aggNC, History: history.StreamConfig{MaxAge: d.cfg.HistoryRetention},
		Registerer: d.reg, Namespace: d.cfg.Namespace, Logger: d.log.With("role", "aggregator"),
	})
	if err != nil {
		return nil, err
	}
	edgeNC, err := d.connect("edge")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.Handle("GET /metrics/gateways", agg.GatewayHandler())
	if err := mountHistoryAPI(mux, edgeNC); err != nil {
		return nil, err
	}
	ecfg := d.cfg.Edge
	ecfg.Listen, ecfg.NATS, ecfg.HTTP, ecfg.PublicHTTP = d.cfg.Listen, edgeNC, mux, dashboard.Patterns
	ecfg.Registerer, ecfg.Namespace, ecfg.Logger = d.reg, d.cfg.Namespace, d.log.With("role", "edge")
	ecfg.AnyOrigin = true // anonymous on loopback: pages from files and other local ports work
	e, err := edge.New(ecfg)
	if err != nil {
		return nil, err
	}
	d.start("aggregator", agg.Run, agg.Shutdown)
	d.start("edge", e.Run, e.Shutdown)
	return e, nil
}

// startUpstream serves the demo upstream on a free loopback port.
func (d *devCluster) startUpstream() (*url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for demo upstream: %w", err)
	}
	d.start("demo upstream", func(ctx context.Context) error {
		return serveListener(ctx, ln, demo.Handler(demo.Config{}), d.log.With("role", "upstream"))
	}, nil)
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}, nil
}

// startGateways runs one gateway per listener and returns their URLs.
func (d *devCluster) startGateways(gws []devGateway, upURL *url.URL) ([]string, error) {
	var targets []string
	for i, g := range gws {
		gnc, err := d.connect(g.instance)
		if err == nil {
			var gw *gateway.Node
			gw, err = gateway.New(gateway.Config{
				Upstream: upURL, Listener: g.ln, Region: g.region, Instance: g.instance, NATS: gnc,
				Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"instance": g.instance, "region": g.region}, d.reg),
				Namespace:  d.cfg.Namespace, Logger: d.log.With("role", "gateway"),
			})
			if err == nil {
				d.start(g.instance, gw.Run, gw.Shutdown)
			}
		}
		if err != nil {
			closeDevGateways(gws[i:])
			return nil, err
		}
		targets = append(targets, "http://"+g.ln.Addr().String()+"/")
	}
	return targets, nil
}

func closeDevGateways(gws []devGateway) {
	for _, g := range gws {
		g.ln.Close()
	}
}

// printDevURLs tells the user where everything is.
func printDevURLs(out io.Writer, cfg devConfig, node *natsnode.Node, edgeAddr net.Addr, gws []devGateway, targets []string, upURL *url.URL) {
	addr := displayAddr(edgeAddr)
	edgeURL := "ws://" + addr + "/ws/metrics"
	fmt.Fprintf(out, "Meridian dev is running (Ctrl-C stops it).\n")
	fmt.Fprintf(out, "  dashboard                 http://%s/\n", addr)
	fmt.Fprintf(out, "  live metrics (WebSocket)  %s\n", edgeURL)
	fmt.Fprintf(out, "  watch them                go run ./cmd/meridian watch %s\n", edgeURL)
	for i, g := range gws {
		fmt.Fprintf(out, "  gateway %-17s %s  (region %s)\n", g.instance, targets[i], g.region)
	}
	fmt.Fprintf(out, "  demo upstream             %s\n", upURL)
	fmt.Fprintf(out, "  prometheus                http://%s/metrics  and  /metrics/gateways\n", addr)
	fmt.Fprintf(out, "  health                    http://%s/healthz  /readyz\n", addr)
	fmt.Fprintf(out, "  history (REST)            http://%s/api/metrics/list  /api/metrics/history?metric=requests_total\n", addr)
	fmt.Fprintf(out, "  nats                      %s  (JetStream data in %s)\n", node.ClientURL(), cfg.DataDir)
	if cfg.DemoRPS > 0 {
		fmt.Fprintf(out, "  demo load                 %g req/s, %g%% asking for errors\n", cfg.DemoRPS, cfg.DemoErrorRatio*100)
	}
}

// displayAddr turns a wildcard listen address into one a browser can use.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// stack runs shutdown steps last-in first-out, once, each bounded in time.
type stack struct {
	mu    sync.Mutex
	steps []stackStep
	done  bool
}

type stackStep struct {
	name string
	fn   func(context.Context) error
}

func (s *stack) push(name string, fn func(context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, stackStep{name, fn})
}

func (s *stack) run(log *slog.Logger) {
	s.mu.Lock()
	steps := s.steps
	s.steps = nil
	s.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := steps[i].fn(ctx); err != nil {
			log.Warn("stop", "component", steps[i].name, "err", err)
		}
		cancel()
	}
}
