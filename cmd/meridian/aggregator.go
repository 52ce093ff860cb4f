package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/proto"
)

func aggregatorCommand() *cli.Command {
	var (
		cfg              aggregator.Config
		natsC            natsClientConfig
		admin, instSnaps string
		tier             string
		regions          cli.StringSlice
	)
	return &cli.Command{
		Name:  "aggregator",
		Usage: "merge gateway reports into cluster, region and instance snapshots every second",
		Description: "Reads meridian.report.> and publishes one snapshot per scope and second on meridian.snapshot.<scope>,\n" +
			"kept in the JetStream stream MERIDIAN_SNAPSHOTS (--history-retention), and one-minute rollups in\n" +
			"MERIDIAN_ROLLUPS (--rollup-retention). Run any number: one leads (a lease in the KV bucket\n" +
			"MERIDIAN_LEADER), the others follow hot and take over with the persisted merge state\n" +
			"(MERIDIAN_STATE). Serves /metrics (its own), /metrics/gateways (every gateway instance with\n" +
			"instance and region labels; the leader only), /healthz and /readyz.\n" +
			"Sharded (see README, Sharding): --tier region --regions eu,us merges only those regions' reports\n" +
			"(one HA shard per region set); --tier cluster merges the region snapshots into the cluster's.\n" +
			portsNote("--listen (default "+defaultAggregatorAdminListen+")"),
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: defaultAggregatorAdminListen, Usage: "address for /metrics, /metrics/gateways, /healthz, /readyz", Destination: &admin},
			&cli.StringFlag{Name: "namespace", Value: aggregator.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
			&cli.DurationFlag{Name: "history-retention", Value: history.DefaultMaxAge, Usage: "how long snapshots are kept in JetStream", Destination: &cfg.History.MaxAge},
			&cli.IntFlag{Name: "history-replicas", Value: history.DefaultReplicas, Usage: "replicas of the history stream (3 in a NATS cluster)", Destination: &cfg.History.Replicas},
			&cli.DurationFlag{Name: "stale-after", Usage: "drop an instance from gauges after this silence (default: 3 × its publish interval, at least 3s)", Destination: &cfg.Merge.StaleAfter},
			&cli.DurationFlag{Name: "avg-window", Value: aggregator.DefaultAvgWindow, Usage: "sliding window of avg_response_time", Destination: &cfg.Merge.AvgWindow},
			&cli.StringFlag{Name: "id", Usage: "name of this aggregator in the leader lease (default: hostname plus a random suffix)", Destination: &cfg.ID},
			&cli.DurationFlag{Name: "leader-ttl", Value: leader.DefaultTTL, Usage: "leader lease TTL: a dead leader is replaced within about this long (all aggregators must agree)", Destination: &cfg.Leader.TTL},
			&cli.IntFlag{Name: "state-replicas", Value: aggregator.DefaultStateReplicas, Usage: "replicas of the lease and merge-state buckets (3 in a NATS cluster)", Destination: &cfg.StateReplicas},
			&cli.DurationFlag{Name: "rollup-retention", Value: history.DefaultRollupMaxAge, Usage: "how long one-minute rollups are kept", Destination: &cfg.Rollups.MaxAge},
			&cli.IntFlag{Name: "rollup-replicas", Value: history.DefaultReplicas, Usage: "replicas of the rollup stream (3 in a NATS cluster)", Destination: &cfg.Rollups.Replicas},
			&cli.DurationFlag{Name: "refill-window", Value: aggregator.DefaultRefillWindow, Usage: "newest part of what is published live-only during a JetStream outage that is written into the history when it recovers (at most " + aggregator.MaxRefillWindow.String() + ")", Destination: &cfg.RefillWindow},
			&cli.DurationFlag{Name: "rollup-spread", Value: aggregator.DefaultRollupSpread, Usage: "how long after its minute the instance rollups of a minute are written over, paced (the cluster and region rollups go out at once)", Destination: &cfg.RollupSpread},
			&cli.IntFlag{Name: "rollup-max-pending", Value: aggregator.DefaultRollupMaxPending, Usage: "instance rollups written and not yet acknowledged, at most", Destination: &cfg.RollupMaxPending},
			&cli.IntFlag{Name: "refill-bytes", Value: aggregator.DefaultRefillBytes, Usage: "memory bound of that refill buffer", Destination: &cfg.RefillBytes},
			&cli.StringFlag{Name: "instance-snapshots", Value: aggregator.InstanceSnapshotsOnDemand.String(), Usage: "instance scopes published every second: on-demand (while an edge's client follows one; every instance still gets its one-minute rollup) or all", Destination: &instSnaps},
			&cli.DurationFlag{Name: "export-ttl", Value: aggregator.DefaultExportTTL, Usage: "how long a silent instance stays on /metrics/gateways", Destination: &cfg.ExportTTL},
			&cli.IntFlag{Name: "max-instances", Value: aggregator.DefaultMaxInstances, Usage: "cap on tracked gateway instances; reports of new ones beyond it are rejected (metric reason max_instances)", Destination: &cfg.Merge.MaxInstances},
			&cli.IntFlag{Name: "max-regions", Value: aggregator.DefaultMaxRegions, Usage: "cap on tracked regions; reports naming new ones beyond it are rejected (reason max_regions)", Destination: &cfg.Merge.MaxRegions},
			&cli.StringFlag{Name: "tier", Value: string(aggregator.TierAll), Usage: "all (every report, every scope), region (only --regions: their region and instance scopes) or cluster (the cluster scope, from the region snapshots)", Destination: &tier},
			&cli.StringSliceFlag{Name: "regions", Usage: "with --tier region: the regions of this shard, e.g. eu,us (every aggregator of the shard lists the same)", Destination: &regions},
			&cli.DurationFlag{Name: "cluster-deadline", Value: aggregator.DefaultClusterDeadline, Usage: "with --tier cluster: how long after a second to wait for region snapshots before publishing the cluster's with what arrived", Destination: &cfg.ClusterDeadline},
			&cli.Int64Flag{Name: "max-request-rate", Value: aggregator.DefaultMaxRequestRate, Usage: "most requests per second one instance may plausibly count; faster-growing reports are rejected (reason counter_jump)", Destination: &cfg.Merge.MaxRequestRate},
		}, natsClientFlags(&natsC)...)),
		Action: func(c *cli.Context) error {
			var err error
			if cfg.InstanceSnapshots, err = aggregator.ParseInstanceSnapshots(instSnaps); err != nil {
				return usageError("--instance-snapshots: %v", err)
			}
			if err := tierFlags(&cfg, tier, regions.Value()); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return usageError("%v", err)
			}
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			log = log.With("role", "aggregator")
			adminLn, err := listenFlag("listen", admin)
			if err != nil {
				return err
			}
			defer adminLn.Close()
			nc, err := connectNATS(natsC, natsauth.RoleAggregator, "meridian-aggregator", log)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg := newRegistry()
			cfg.NATS, cfg.Registerer, cfg.Logger = nc, reg, log
			agg, err := aggregator.New(cfg)
			if err != nil {
				return err
			}
			registerNATSClient(reg, cfg.Namespace, "aggregator", nc)
			mux := adminMux(reg, agg.Ready)
			mux.Handle("GET /metrics/gateways", agg.GatewayHandler())
			g, ctx := newGroup(c.Context)
			g.Go(func() error { return agg.Run(ctx) })
			g.Go(func() error { return serveListener(ctx, adminLn, mux, log) })
			log.Info("aggregator running", "id", agg.ID(), "nats", natsC.URL, "listen", admin, "tier", cfg.Tier, "regions", cfg.Regions)
			return g.Wait()
		},
	}
}

// tierFlags sets the tier and its regions, refusing a combination that
// does not shard with a usage error naming the flags.
func tierFlags(cfg *aggregator.Config, tier string, regions []string) error {
	t, err := aggregator.ParseTier(tier)
	if err != nil {
		return usageError("--tier: %v", err)
	}
	switch {
	case t == aggregator.TierRegion && len(regions) == 0:
		return usageError("--tier region needs --regions (the regions of this shard, e.g. --regions eu,us)")
	case t != aggregator.TierRegion && len(regions) > 0:
		return usageError("--regions %s: only with --tier region", strings.Join(regions, ","))
	}
	for _, r := range regions {
		if err := proto.ValidateToken("region", r); err != nil {
			return usageError("--regions: %v", err)
		}
	}
	cfg.Tier, cfg.Regions = t, regions
	return nil
}
