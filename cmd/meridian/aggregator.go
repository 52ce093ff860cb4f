package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsauth"
)

type aggregatorConfig struct {
	NATS             natsClientConfig
	Listen           string
	Namespace        string
	HistoryRetention time.Duration
	HistoryReplicas  int
	StaleAfter       time.Duration
	AvgWindow        time.Duration
	ExportTTL        time.Duration
	ID               string
	LeaderTTL        time.Duration
	StateReplicas    int
	RollupRetention  time.Duration
	RollupReplicas   int
	MaxInstances     int
	MaxRegions       int
	MaxRequestRate   int64
}

func aggregatorCommand() *cli.Command {
	var cfg aggregatorConfig
	return &cli.Command{
		Name:  "aggregator",
		Usage: "merge gateway reports into cluster, region and instance snapshots every second",
		Description: "Reads meridian.report.> and publishes one snapshot per scope and second on meridian.snapshot.<scope>,\n" +
			"kept in the JetStream stream MERIDIAN_SNAPSHOTS (--history-retention), and one-minute rollups in\n" +
			"MERIDIAN_ROLLUPS (--rollup-retention). Run any number: one leads (a lease in the KV bucket\n" +
			"MERIDIAN_LEADER), the others follow hot and take over with the persisted merge state\n" +
			"(MERIDIAN_STATE). Serves /metrics (its own), /metrics/gateways (every gateway instance with\n" +
			"instance and region labels; the leader only), /healthz and /readyz.",
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":9102", Usage: "address for /metrics, /metrics/gateways, /healthz, /readyz", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "namespace", Value: "meridian", Usage: "metric name prefix", Destination: &cfg.Namespace},
			&cli.DurationFlag{Name: "history-retention", Value: history.DefaultMaxAge, Usage: "how long snapshots are kept in JetStream", Destination: &cfg.HistoryRetention},
			&cli.IntFlag{Name: "history-replicas", Value: 1, Usage: "replicas of the history stream (3 in a NATS cluster)", Destination: &cfg.HistoryReplicas},
			&cli.DurationFlag{Name: "stale-after", Usage: "drop an instance from gauges after this silence (default: 3 × its publish interval, at least 3s)", Destination: &cfg.StaleAfter},
			&cli.DurationFlag{Name: "avg-window", Value: 10 * time.Second, Usage: "sliding window of avg_response_time", Destination: &cfg.AvgWindow},
			&cli.StringFlag{Name: "id", Usage: "name of this aggregator in the leader lease (default: hostname plus a random suffix)", Destination: &cfg.ID},
			&cli.DurationFlag{Name: "leader-ttl", Value: 2 * time.Second, Usage: "leader lease TTL: a dead leader is replaced within about this long (all aggregators must agree)", Destination: &cfg.LeaderTTL},
			&cli.IntFlag{Name: "state-replicas", Value: 1, Usage: "replicas of the lease and merge-state buckets (3 in a NATS cluster)", Destination: &cfg.StateReplicas},
			&cli.DurationFlag{Name: "rollup-retention", Value: history.DefaultRollupMaxAge, Usage: "how long one-minute rollups are kept", Destination: &cfg.RollupRetention},
			&cli.IntFlag{Name: "rollup-replicas", Value: 1, Usage: "replicas of the rollup stream (3 in a NATS cluster)", Destination: &cfg.RollupReplicas},
			&cli.IntFlag{Name: "max-instances", Value: aggregator.DefaultMaxInstances, Usage: "cap on tracked gateway instances; reports of new ones beyond it are rejected (metric reason max_instances)", Destination: &cfg.MaxInstances},
			&cli.IntFlag{Name: "max-regions", Value: aggregator.DefaultMaxRegions, Usage: "cap on tracked regions; reports naming new ones beyond it are rejected (reason max_regions)", Destination: &cfg.MaxRegions},
			&cli.Int64Flag{Name: "max-request-rate", Value: aggregator.DefaultMaxRequestRate, Usage: "most requests per second one instance may plausibly count; faster-growing reports are rejected (reason counter_jump)", Destination: &cfg.MaxRequestRate},
			&cli.DurationFlag{Name: "export-ttl", Value: 5 * time.Minute, Usage: "how long a silent instance stays on /metrics/gateways", Destination: &cfg.ExportTTL},
		}, natsClientFlags(&cfg.NATS)...)),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			log = log.With("role", "aggregator")
			nc, err := connectNATS(cfg.NATS, natsauth.RoleAggregator, "meridian-aggregator", log)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := newRegistry()
			agg, err := aggregator.New(aggregator.Config{
				NATS:       nc,
				History:    history.StreamConfig{Replicas: cfg.HistoryReplicas, MaxAge: cfg.HistoryRetention},
				StaleAfter: cfg.StaleAfter, AvgWindow: cfg.AvgWindow, ExportTTL: cfg.ExportTTL,
				MaxInstances: cfg.MaxInstances, MaxRegions: cfg.MaxRegions, MaxRequestRate: cfg.MaxRequestRate,
				ID: cfg.ID, Leader: aggregator.LeaderConfig{TTL: cfg.LeaderTTL}, StateReplicas: cfg.StateReplicas,
				Rollups:    aggregator.RollupConfig{Replicas: cfg.RollupReplicas, MaxAge: cfg.RollupRetention},
				Registerer: reg, Namespace: cfg.Namespace, Logger: log,
			})
			if err != nil {
				return usageError("%v", err)
			}
			registerNATSClient(reg, cfg.Namespace, "aggregator", nc)
			mux := adminMux(reg, natsReady(nc))
			mux.Handle("GET /metrics/gateways", agg.GatewayHandler())
			g, ctx := newGroup(c.Context)
			g.Go(func() error { return agg.Run(ctx) })
			g.Go(func() error { return serveHTTP(ctx, cfg.Listen, mux, log) })
			log.Info("aggregator running", "id", agg.ID(), "nats", cfg.NATS.URL, "listen", cfg.Listen)
			return g.Wait()
		},
	}
}
