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
	return &cli.Command{
		Name:  "scale",
		Usage: "measure NATS, aggregators and an edge with N simulated gateway instances reporting every second",
		Description: "Starts `meridian nats`, --aggregators aggregators and an edge as separate processes on loopback ports,\n" +
			"then publishes a real report per simulated instance and second (spread over the second, across --regions).\n" +
			"After --warmup it measures a --duration window: CPU and RSS per role and per instance, aggregator CPU per\n" +
			"report, the delay from each second to its cluster and region snapshots, NATS and history-stream rates and\n" +
			"history bytes per instance per day. With two aggregators it then kills the leader and times the failover;\n" +
			"last it stops the load and checks the cluster totals equal what the gateways published.",
		Flags: bindEnv([]cli.Flag{
			&cli.IntFlag{Name: "instances", Value: scale.DefaultInstances, Usage: "simulated gateway instances", Destination: &cfg.Instances},
			&cli.IntFlag{Name: "regions", Value: scale.DefaultRegions, Usage: "regions the instances are spread over", Destination: &cfg.Regions},
			&cli.DurationFlag{Name: "warmup", Value: scale.DefaultWarmup, Usage: "load before the measurement window", Destination: &cfg.Warmup},
			&cli.DurationFlag{Name: "duration", Value: scale.DefaultDuration, Usage: "measurement window (at least 3s)", Destination: &cfg.Duration},
			&cli.IntFlag{Name: "aggregators", Value: scale.DefaultAggregators, Usage: "aggregator processes: 1, or 2 to measure a failover", Destination: &cfg.Aggregators},
			&cli.StringFlag{Name: "instance-snapshots", Value: aggregator.InstanceSnapshotsOnDemand.String(), Usage: "the aggregators' --instance-snapshots: on-demand, or all (every instance every second: the design before on-demand, for comparison)", Destination: &cfg.InstanceSnapshots},
			&cli.IntFlag{Name: "publishers", Value: scale.DefaultPublishers, Usage: "goroutines publishing the simulated reports", Destination: &cfg.Publishers},
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
