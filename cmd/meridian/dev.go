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
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/aggregator"
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
	Edge             edgeConfig
}

func devCommand() *cli.Command {
	var cfg devConfig
	return &cli.Command{
		Name:  "dev",
		Usage: "run a whole Meridian cluster in one process: NATS, aggregator, edge, two gateways, demo traffic",
		Description: "Starts an embedded NATS server with JetStream (data under --data-dir), one aggregator, one edge on\n" +
			"--listen, a demo upstream, one gateway per --gateways entry (default eu and us) in front of it, and\n" +
			"a light load (--demo-rps; 0 turns it off) so the numbers move. Every HTTP endpoint is on --listen:\n" +
			"/ws/metrics, /metrics, /metrics/gateways, /healthz, /readyz. Ctrl-C stops it cleanly.",
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":5900", Usage: "edge address: /ws/metrics and every HTTP endpoint", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "data-dir", Value: "./.meridian", Usage: "where JetStream keeps history", Destination: &cfg.DataDir},
			&cli.StringFlag{Name: "nats-listen", Value: "127.0.0.1:4222", Usage: "embedded NATS client address (other meridian processes can join here)", Destination: &cfg.NATSListen},
			&cli.StringSliceFlag{Name: "gateways", Value: cli.NewStringSlice("eu=127.0.0.1:8081", "us=127.0.0.1:8082"), Usage: "gateways to run, as region=listen-address"},
			&cli.Float64Flag{Name: "demo-rps", Value: 20, Usage: "demo requests per second across the gateways; 0 turns the demo load off", Destination: &cfg.DemoRPS},
			&cli.Float64Flag{Name: "demo-error-ratio", Value: 0.05, Usage: "fraction of each gateway's demo requests that ask the upstream for a 500", Destination: &cfg.DemoErrorRatio},
			&cli.StringFlag{Name: "namespace", Value: "meridian", Usage: "metric name prefix", Destination: &cfg.Namespace},
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
			for _, g := range gws {
				g.ln.Close()
			}
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
	host, port, err := splitHostPort("--nats-listen", cfg.NATSListen)
	if err != nil {
		return err
	}
	if port == 0 {
		port = -1
	}
	node, err := natsnode.New(natsnode.Config{
		Name: "meridian-dev", Host: host, Port: port,
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Logger: log.With("role", "nats"),
	})
	if err != nil {
		return err
	}
	if err := node.Start(ctx); err != nil {
		return err
	}
	var stops stack
	defer stops.run(log)
	stops.push("nats", node.Shutdown)

	reg := newRegistry()
	reg.MustRegister(node.Collector(cfg.Namespace))
	connect := func(name string) (*nats.Conn, error) {
		nc, err := node.Connect(nats.Name(name), nats.MaxReconnects(-1))
		if err == nil {
			registerNATSClient(reg, cfg.Namespace, name, nc)
			stops.push(name+" connection", func(context.Context) error { nc.Close(); return nil })
		}
		return nc, err
	}

	gatewaysLns, err := parseDevGateways(cfg.Gateways)
	if err != nil {
		return err
	}

	// Aggregator.
	aggNC, err := connect("aggregator")
	if err != nil {
		return err
	}
	agg, err := aggregator.New(aggregator.Config{
		NATS: aggNC, History: history.StreamConfig{MaxAge: cfg.HistoryRetention},
		Registerer: reg, Namespace: cfg.Namespace, Logger: log.With("role", "aggregator"),
	})
	if err != nil {
		return err
	}

	// Edge, serving every HTTP endpoint of the process on its port.
	edgeNC, err := connect("edge")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("GET /metrics/gateways", agg.GatewayHandler())
	if err := mountHistoryAPI(mux, edgeNC); err != nil {
		return err
	}
	e, err := edge.New(cfg.Edge.apply(edge.Config{
		Listen: cfg.Listen, NATS: edgeNC, HTTP: mux,
		Registerer: reg, Namespace: cfg.Namespace, Logger: log.With("role", "edge"),
	}))
	if err != nil {
		for _, g := range gatewaysLns {
			g.ln.Close()
		}
		return err
	}

	// Demo upstream.
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for demo upstream: %w", err)
	}
	upURL := &url.URL{Scheme: "http", Host: upLn.Addr().String()}

	var wg sync.WaitGroup
	failed := make(chan error, 8)
	start := func(name string, run func(context.Context) error, stop func(context.Context) error) {
		rctx, cancel := context.WithCancel(context.Background())
		wg.Go(func() {
			if err := run(rctx); err != nil && !errors.Is(err, context.Canceled) {
				failed <- fmt.Errorf("%s: %w", name, err)
			}
		})
		stops.push(name, func(sctx context.Context) error {
			var err error
			if stop != nil {
				err = stop(sctx)
			}
			cancel()
			return err
		})
	}

	start("aggregator", agg.Run, agg.Shutdown)
	start("edge", e.Run, e.Shutdown)
	start("demo upstream", func(ctx context.Context) error {
		return serveListener(ctx, upLn, demo.Handler(demo.Config{}), log.With("role", "upstream"))
	}, nil)

	var targets []string
	for _, g := range gatewaysLns {
		gnc, err := connect(g.instance)
		if err != nil {
			return err
		}
		gw, err := gateway.New(gateway.Config{
			Upstream: upURL, Listener: g.ln, Region: g.region, Instance: g.instance, NATS: gnc,
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"instance": g.instance, "region": g.region}, reg),
			Namespace:  cfg.Namespace, Logger: log.With("role", "gateway"),
		})
		if err != nil {
			return err
		}
		start(g.instance, gw.Run, gw.Shutdown)
		targets = append(targets, "http://"+g.ln.Addr().String()+"/")
	}

	if cfg.DemoRPS > 0 && len(targets) > 0 {
		start("demo load", func(ctx context.Context) error {
			_, err := loadgen.Run(ctx, loadgen.Config{
				Targets: targets, RPS: cfg.DemoRPS, Continuous: true, ErrorRatio: cfg.DemoErrorRatio,
			})
			return err
		}, nil)
	}

	edgeURL := "ws://" + displayAddr(e.Addr()) + "/ws/metrics"
	fmt.Fprintf(out, "Meridian dev is running (Ctrl-C stops it).\n")
	fmt.Fprintf(out, "  live metrics (WebSocket)  %s\n", edgeURL)
	fmt.Fprintf(out, "  watch them                go run ./cmd/meridian watch %s\n", edgeURL)
	for i, g := range gatewaysLns {
		fmt.Fprintf(out, "  gateway %-17s %s  (region %s)\n", g.instance, targets[i], g.region)
	}
	fmt.Fprintf(out, "  demo upstream             %s\n", upURL)
	fmt.Fprintf(out, "  prometheus                http://%s/metrics  and  /metrics/gateways\n", displayAddr(e.Addr()))
	fmt.Fprintf(out, "  health                    http://%s/healthz  /readyz\n", displayAddr(e.Addr()))
	fmt.Fprintf(out, "  history (REST)           http://%s/api/metrics/list  /api/metrics/history?metric=requests_total\n", displayAddr(e.Addr()))
	fmt.Fprintf(out, "  nats                      %s  (JetStream data in %s)\n", node.ClientURL(), cfg.DataDir)
	if cfg.DemoRPS > 0 {
		fmt.Fprintf(out, "  demo load                 %g req/s, %g%% asking for errors\n", cfg.DemoRPS, cfg.DemoErrorRatio*100)
	}

	var runErr error
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "stopping…")
	case runErr = <-failed:
		log.Error("dev cluster stopping", "err", runErr)
	}
	stops.run(log)
	wg.Wait()
	return runErr
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
