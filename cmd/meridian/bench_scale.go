package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/benchmark/scale"
)

func benchScaleCommand() *cli.Command {
	var cfg scale.Config
	var asJSON, verbose, check bool
	var histBuckets int
	return &cli.Command{
		Name:  "scale",
		Usage: "measure NATS, aggregators and an edge with N simulated gateway instances reporting every second",
		Description: "Starts `meridian nats` (--nats-nodes 3: a cluster on loopback routes, streams at R3), --aggregators\n" +
			"aggregators (--shards K: K region shards of --aggregators each and a cluster tier) and an edge as separate\n" +
			"processes on loopback ports, then publishes a real report per simulated instance and second (spread over\n" +
			"the second, across --regions, each with a latency histogram of --histogram-buckets buckets), and with --subscribers K opens K WebSocket clients of the edge following the\n" +
			"cluster, the regions and --followed-instances instances at 1 s. After --warmup it measures a --duration\n" +
			"window: CPU and RSS per role and per instance, aggregator CPU per report (per shard), the delay from each\n" +
			"second to its cluster and region snapshots and to the subscribers' receipt, deliveries versus due, NATS and\n" +
			"history-stream rates, history bytes per instance per day and the merge state's size and chunks. With two\n" +
			"aggregators per group it then kills a leader (sharded: a region shard's, then the cluster tier's) and times\n" +
			"the failover; last it stops the load and checks the cluster and region totals equal what the gateways published.",
		Flags: bindEnv([]cli.Flag{
			&cli.IntFlag{Name: "instances", Value: scale.DefaultInstances, Usage: "simulated gateway instances", Destination: &cfg.Instances},
			&cli.IntFlag{Name: "regions", Value: scale.DefaultRegions, Usage: "regions the instances are spread over", Destination: &cfg.Regions},
			&cli.DurationFlag{Name: "warmup", Value: scale.DefaultWarmup, Usage: "load before the measurement window", Destination: &cfg.Warmup},
			&cli.DurationFlag{Name: "duration", Value: scale.DefaultDuration, Usage: "measurement window (at least 3s)", Destination: &cfg.Duration},
			&cli.IntFlag{Name: "aggregators", Value: scale.DefaultAggregators, Usage: "aggregator processes per group: 1, or 2 to measure a failover", Destination: &cfg.Aggregators},
			&cli.IntFlag{Name: "nats-nodes", Value: scale.DefaultNATSNodes, Usage: "NATS servers: 1, or 3 (a cluster; streams and buckets at three replicas)", Destination: &cfg.NATSNodes},
			&cli.IntFlag{Name: "shards", Usage: "region shards (aggregators with --tier region) plus a cluster tier (--tier cluster); 0 runs the single tier", Destination: &cfg.Shards},
			&cli.IntFlag{Name: "subscribers", Usage: "WebSocket subscribers of the edge, following the cluster, the regions and --followed-instances instances at 1 s", Destination: &cfg.Subscribers},
			&cli.IntFlag{Name: "followed-instances", Value: scale.DefaultFollowedInstances, Usage: "instances the subscribers follow (-1: none)", Destination: &cfg.FollowedInstances},
			&cli.DurationFlag{Name: "subscriber-phase", Value: scale.DefaultPhase, Usage: "when in the second subscribers connect, which the edge keeps as their phase (100ms to 900ms)", Destination: &cfg.Phase},
			&cli.StringFlag{Name: "instance-snapshots", Value: aggregator.InstanceSnapshotsOnDemand.String(), Usage: "the aggregators' --instance-snapshots: on-demand, or all (every instance every second: the design before on-demand, for comparison)", Destination: &cfg.InstanceSnapshots},
			&cli.IntFlag{Name: "histogram-buckets", Value: scale.DefaultHistogramBuckets, Usage: fmt.Sprintf("occupied buckets of each simulated report's latency histogram (0: none, the reports carry only the coarse buckets; at most %d)", scale.MaxHistogramBuckets), Destination: &histBuckets},
			&cli.IntFlag{Name: "publishers", Value: scale.DefaultPublishers, Usage: "goroutines publishing the simulated reports (at least one per NATS node)", Destination: &cfg.Publishers},
			&cli.DurationFlag{Name: "settle", Value: scale.DefaultSettle, Usage: "longest wait for the failover's first snapshot and for exact totals", Destination: &cfg.Settle},
			&cli.StringFlag{Name: "dir", Usage: "NATS store directory (default: a temporary one, removed after)", Destination: &cfg.Dir},
			&cli.BoolFlag{Name: "check", Usage: "exit 1 unless the figures are sane (see scale.Report.Check)", Destination: &check},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table", Destination: &asJSON},
			&cli.BoolFlag{Name: "verbose", Usage: "pass the child processes' logs through to stderr", Destination: &verbose},
		}),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own executable: %w", err)
			}
			cfg.HistogramBuckets = histBuckets
			if histBuckets == 0 {
				cfg.HistogramBuckets = -1 // the Config's "none"; its zero means the default
			}
			cfg.Command = func(args ...string) *exec.Cmd { return exec.Command(self, args...) }
			cfg.Logger = log.With("role", "bench-scale")
			if verbose {
				cfg.Output = c.App.ErrWriter
			}
			start := time.Now()
			rep, err := scale.Run(c.Context, cfg)
			if errors.Is(err, scale.ErrInvalidConfig) {
				return usageError("%v", err)
			}
			if err != nil {
				return err
			}
			log.Info("bench scale done", "took", time.Since(start).Round(time.Second))
			if err := writeReport(c.App.Writer, asJSON, rep, rep.WriteTable); err != nil {
				return err
			}
			if check {
				return rep.Check()
			}
			return nil
		},
	}
}
