package main

import (
	"context"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/gateway"
)

func gatewayCommand() *cli.Command {
	var (
		cfg             gateway.Config
		upstream, admin string
		natsC           natsClientConfig
	)
	return &cli.Command{
		Name:  "gateway",
		Usage: "run a counting reverse proxy that publishes its per-instance report to NATS",
		Description: "Proxies every request on --listen to --upstream and counts it (status < 400 success, >= 400\n" +
			"error; 502/504 for upstream failures, 499 for clients that went away). Publishes a cumulative\n" +
			"report on meridian.report.<region>.<instance> every --publish-interval, and a final one on\n" +
			"shutdown. /metrics, /healthz and /readyz are served on --admin-listen.\n" +
			portsNote("--listen (default "+gateway.DefaultListen+") and --admin-listen (default "+defaultGatewayAdminListen+")"),
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "upstream", Required: true, Usage: "URL requests are proxied to", Destination: &upstream},
			&cli.StringFlag{Name: "listen", Value: gateway.DefaultListen, Usage: "proxy listen address", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "region", Required: true, Usage: "region of this instance (letters, digits, - and _)", Destination: &cfg.Region},
			&cli.StringFlag{Name: "instance", Usage: "instance id, unique in the cluster (default: the hostname, e.g. the container's)", Destination: &cfg.Instance},
			&cli.DurationFlag{Name: "publish-interval", Value: gateway.DefaultPublishInterval, Usage: "time between reports", Destination: &cfg.PublishInterval},
			&cli.DurationFlag{Name: "upstream-timeout", Value: gateway.DefaultUpstreamTimeout, Usage: "upstream connect + response-header timeout (504 beyond)", Destination: &cfg.UpstreamTimeout},
			&cli.StringFlag{Name: "admin-listen", Value: defaultGatewayAdminListen, Usage: "address for /metrics, /healthz, /readyz", Destination: &admin},
			&cli.StringFlag{Name: "namespace", Value: gateway.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
		}, natsClientFlags(&natsC)...)),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			up, err := url.Parse(upstream)
			if err != nil || up.Scheme == "" || up.Host == "" {
				return usageError("--upstream %q: want an absolute URL such as http://127.0.0.1:9000", upstream)
			}
			cfg.Upstream = up
			if err := instanceIdentity(cfg.Region, &cfg.Instance); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return usageError("%v", err)
			}
			log = log.With("role", "gateway")
			adminLn, err := listenFlag("admin-listen", admin)
			if err != nil {
				return err
			}
			defer adminLn.Close()
			nc, err := connectNATS(natsC, natsauth.RoleGateway, "meridian-gateway-"+cfg.Instance, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := newRegistry()
			cfg.NATS, cfg.Registerer, cfg.Logger = nc, reg, log
			node, err := gateway.New(cfg)
			if err != nil {
				return err
			}
			registerNATSClient(reg, cfg.Namespace, "gateway", nc)
			// Joins this process's own series (labelled by scrape target) with
			// the relayed per-instance series (labelled instance/region).
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: cfg.Namespace, Subsystem: "gateway", Name: "info",
				Help:        "Always 1; labels name this gateway process's instance, region and boot.",
				ConstLabels: prometheus.Labels{"instance": cfg.Instance, "region": cfg.Region, "boot_id": node.BootID()},
			}, func() float64 { return 1 }))
			g, ctx := newGroup(c.Context)
			g.Go(func() error { return node.Run(ctx) })
			g.Go(func() error { return serveListener(ctx, adminLn, adminMux(reg, node.Ready), log) })
			log.Info("gateway running", "listen", cfg.Listen, "upstream", up.String(), "nats", natsC.URL)
			err = g.Wait()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = nc.FlushWithContext(sctx)
			return err
		},
	}
}
