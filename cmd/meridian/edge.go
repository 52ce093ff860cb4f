package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/dashboard"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsauth"
)

// edgeFlags set the edge.Config fields an operator tunes, defaulting to the
// package's constants.
func edgeFlags(cfg *edge.Config) []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "history-window", Value: edge.DefaultHistoryWindow, Usage: "history kept in memory and sent with include_history", Destination: &cfg.HistoryWindow},
		&cli.IntFlag{Name: "history-points", Value: edge.DefaultHistoryPoints, Usage: "cap on a client's history_points (clients get 720 unless they ask)", Destination: &cfg.HistoryPoints},
		&cli.DurationFlag{Name: "heartbeat-interval", Value: edge.DefaultHeartbeatInterval, Usage: "period of Heartbeat events", Destination: &cfg.HeartbeatInterval},
		&cli.DurationFlag{Name: "ping-interval", Value: edge.DefaultPingInterval, Usage: "period of WebSocket pings", Destination: &cfg.PingInterval},
		&cli.DurationFlag{Name: "idle-timeout", Value: edge.DefaultIdleTimeout, Usage: "close connections silent for this long", Destination: &cfg.IdleTimeout},
		&cli.IntFlag{Name: "max-replay-snapshots", Value: edge.DefaultMaxReplaySnapshots, Usage: "most snapshots a since replay sends", Destination: &cfg.MaxReplaySnapshots},
		&cli.DurationFlag{Name: "history-request-interval", Value: edge.DefaultHistoryRequestInterval, Usage: "per connection, one history request (include_history or since) per this interval", Destination: &cfg.HistoryRequestInterval},
		&cli.IntFlag{Name: "history-request-burst", Value: edge.DefaultHistoryRequestBurst, Usage: "history requests a connection may make at once", Destination: &cfg.HistoryRequestBurst},
		&cli.DurationFlag{Name: "follow-grace", Value: edge.DefaultFollowGrace, Usage: "stay subscribed to an instance's snapshots this long after its last client left (reconnects find it current)", Destination: &cfg.FollowGrace},
		&cli.DurationFlag{Name: "stale-after", Value: edge.DefaultStaleAfter, Usage: "tell a client once, with an Error event, when its scope's newest snapshot is older than this", Destination: &cfg.StaleAfter},
		&cli.IntFlag{Name: "max-message-bytes", Value: edge.DefaultMaxMessageBytes, Usage: "largest client message; larger closes with 1009", Destination: &cfg.MaxMessageBytes},
		&cli.IntFlag{Name: "memory-release-upgrades", Value: edge.DefaultMemoryReleaseUpgrades, Usage: "after this many WebSocket upgrades, once no handshake has been in flight for a second, collect and return free memory to the OS (-1: never)", Destination: &cfg.MemoryReleaseUpgrades},
	}
}

// mountHistoryAPI serves /api/metrics/list, /api/metrics/history and
// /api/metrics/latest (behind an edge, which authenticates and rate-limits
// the requests), and the dashboard at / that reads them.
func mountHistoryAPI(mux *http.ServeMux, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open jetstream: %w", err)
	}
	api, err := history.NewAPI(history.APIConfig{JetStream: js})
	if err != nil {
		return err
	}
	mux.Handle("GET /api/metrics/", api)
	dashboard.New().Mount(mux)
	return nil
}

func edgeCommand() *cli.Command {
	var (
		cfg         edge.Config
		sec         edgeSecurity
		natsC       natsClientConfig
		adminListen string
	)
	return &cli.Command{
		Name:  "edge",
		Usage: "serve the Kairos-compatible /ws/metrics WebSocket endpoint to many subscribers",
		Description: "Serves ws://<listen>/ws/metrics (wss:// with --tls-cert) and the REST history API from the live\n" +
			"snapshots on NATS, the live dashboard at /, /healthz and /readyz on the same port, and /metrics,\n" +
			"/healthz, /readyz on --admin-listen (loopback by default; empty: /metrics on the public port, behind\n" +
			"the token check).\n" +
			"Clients need a JWT (see `meridian token`) unless --anonymous. Shuts down with close code 1001\n" +
			"so clients reconnect elsewhere.\n" +
			portsNote("--listen (default "+edge.DefaultListen+") and --admin-listen (default "+defaultEdgeAdminListen+")"),
		Flags: bindEnv(append(append(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: edge.DefaultListen, Usage: "WebSocket and HTTP listen address", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "admin-listen", Value: defaultEdgeAdminListen, Usage: "address for /metrics, /healthz, /readyz; empty: /metrics on --listen", Destination: &adminListen},
			&cli.StringFlag{Name: "namespace", Value: edge.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
		}, edgeFlags(&cfg)...), edgeLimitFlags(&cfg)...), append(edgeSecurityFlags(&sec), natsClientFlags(&natsC)...)...)),
		Action: func(c *cli.Context) error {
			if err := cfg.Validate(); err != nil {
				return usageError("%v", err)
			}
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			log = log.With("role", "edge")
			verifier, err := sec.apply(c.Context, &cfg, log)
			if err != nil {
				return err
			}
			if verifier != nil {
				defer verifier.Close()
			}
			var adminLn net.Listener
			if adminListen != "" {
				if adminLn, err = net.Listen("tcp", adminListen); err != nil {
					return fmt.Errorf("listen on --admin-listen %s: %w", adminListen, err)
				}
				defer adminLn.Close()
			}
			nc, err := connectNATS(natsC, natsauth.RoleEdge, "meridian-edge", log)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := newRegistry()
			registerNATSClient(reg, cfg.Namespace, "edge", nc)
			public := metricsMux(reg)
			if adminLn != nil {
				public = http.NewServeMux() // /metrics only on the admin listener
			}
			if err := mountHistoryAPI(public, nc); err != nil {
				return err
			}
			cfg.NATS, cfg.Registerer, cfg.Logger, cfg.HTTP, cfg.PublicHTTP = nc, reg, log, public, dashboard.Patterns
			e, err := edge.New(cfg)
			if err != nil {
				return err
			}
			log.Info("edge listening", "url", schemeOf(cfg.TLS, "ws://", "wss://")+e.Addr().String()+"/ws/metrics",
				"dashboard", schemeOf(cfg.TLS, "http://", "https://")+displayAddr(e.Addr())+"/", "auth", verifier != nil)
			g, ctx := newGroup(c.Context)
			if adminLn != nil {
				admin := adminMux(reg, e.Ready) // Ready includes the NATS connection
				g.Go(func() error { return serveListener(ctx, adminLn, admin, log) })
			}
			g.Go(func() error {
				err := e.Run(ctx)
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = e.Shutdown(sctx)
				return err
			})
			return g.Wait()
		},
	}
}
