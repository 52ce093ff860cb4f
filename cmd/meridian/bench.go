package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/benchmark"
)

func benchCommand() *cli.Command {
	var cfg benchmark.Config
	var intervals, network string
	var asJSON, verbose bool
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the edge against a naive baseline and a raw write loop with real WebSocket subscribers",
		Description: "For each mode (edge, naive, raw) starts a server process — embedded NATS, an aggregator stub publishing\n" +
			"a snapshot every second, and the server under test — and a client process opening --subscribers\n" +
			"WebSocket subscribers from 127.0.0.x addresses. Reports memory per idle subscriber, CPU per delivered\n" +
			"snapshot, tick-to-wire latency and delivered vs due snapshots, with the ratios and the performance\n" +
			"targets, as a table or (--json) as one JSON object. Takes about (duration + 15 s) per mode.",
		Flags: bindEnv([]cli.Flag{
			&cli.StringSliceFlag{Name: "subscribers", Value: cli.NewStringSlice(strconv.Itoa(benchmark.DefaultSubscribers)), Usage: "subscribers per mode (at most the file limit minus 64; as root the limit is raised); a list, e.g. 5000,10000,20000, measures idle memory at each count on the way up to the last, in the same server"},
			&cli.IntFlag{Name: "warmup", Value: benchmark.DefaultWarmup, Usage: "subscribers that connect and leave before the idle-memory baseline (at most half the first count; -1: none, baseline before any connection)", Destination: &cfg.Warmup},
			&cli.DurationFlag{Name: "duration", Value: benchmark.DefaultDuration, Usage: "measurement window per mode (at least 3s)", Destination: &cfg.Duration},
			&cli.StringFlag{Name: "intervals", Value: string(benchmark.IntervalsOne), Usage: "1s: every subscriber at 1 s; spread: 1 to 60 s (use --duration 1m or more)", Destination: &intervals},
			&cli.StringSliceFlag{Name: "modes", Value: cli.NewStringSlice("edge", "naive", "raw"), Usage: "modes to measure, in order: edge, naive, raw"},
			&cli.IntFlag{Name: "sources", Value: benchmark.DefaultSources, Usage: "loopback source addresses 127.0.0.1 to 127.0.0.N", Destination: &cfg.Sources},
			&cli.IntFlag{Name: "connect-rate", Value: benchmark.DefaultConnectRate, Usage: "subscriber connections per second", Destination: &cfg.ConnectRate},
			&cli.DurationFlag{Name: "client-poll", Usage: "client polls its sockets this often instead of blocking in epoll (0: block); no server write then wakes a client thread, tick-to-wire includes up to this", Destination: &cfg.ClientPoll},
			&cli.IntFlag{Name: "rounds", Value: 1, Usage: "run the modes this many times, interleaved, and report each mode's round with the median CPU per delivery (steadier on a VM with noisy neighbours)", Destination: &cfg.Rounds},
			&cli.IntFlag{Name: "slow-subscribers", Usage: "of the subscribers, this many (spread evenly) stall and then read everything, with the smallest receive buffer; every server socket then gets the smallest send buffer", Destination: &cfg.Slow},
			&cli.DurationFlag{Name: "slow-stall", Value: benchmark.DefaultSlowStall, Usage: "how long a slow subscriber does not read (past about 8 s the smallest buffers are full)", Destination: &cfg.SlowStall},
			&cli.StringFlag{Name: "network", Value: string(benchmark.NetworkAuto), Usage: "namespace: each mode's processes in a network namespace of their own (needs root), free of the host's firewall and conntrack rules; host: the host's loopback; auto: namespace where possible", Destination: &network},
			&cli.DurationFlag{Name: "settle", Value: benchmark.DefaultSettle, Usage: "wait after connecting before measuring idle memory", Destination: &cfg.Settle},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table", Destination: &asJSON},
			&cli.BoolFlag{Name: "verbose", Usage: "pass the child processes' logs through to stderr", Destination: &verbose},
		}),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			if cfg.Intervals, err = benchmark.ParseIntervals(intervals); err != nil {
				return usageError("--intervals: %v", err)
			}
			if cfg.Network, err = benchmark.ParseNetwork(network); err != nil {
				return usageError("--network: %v", err)
			}
			if cfg.MemoryPoints, cfg.Subscribers, err = parseSweep(c.StringSlice("subscribers")); err != nil {
				return usageError("--subscribers: %v", err)
			}
			if cfg.Warmup == benchmark.DefaultWarmup && !c.IsSet("warmup") {
				cfg.Warmup = 0 // the default, capped by the first count
			}
			cfg.Modes = nil
			for _, m := range c.StringSlice("modes") {
				mode, err := benchmark.ParseMode(m)
				if err != nil {
					return usageError("--modes: %v", err)
				}
				cfg.Modes = append(cfg.Modes, mode)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own executable: %w", err)
			}
			cfg.Child = func() *exec.Cmd { return exec.Command(self, "bench", "child") }
			cfg.Logger = log.With("role", "bench")
			if verbose {
				cfg.ChildStderr = c.App.ErrWriter
			}
			start := time.Now()
			rep, err := benchmark.Run(c.Context, cfg)
			if errors.Is(err, benchmark.ErrInvalidConfig) {
				return usageError("%v", err)
			}
			if err != nil {
				return err
			}
			log.Info("bench done", "took", time.Since(start).Round(time.Second))
			return writeReport(c.App.Writer, asJSON, rep, rep.WriteTable)
		},
		Subcommands: []*cli.Command{benchScaleCommand(), {
			Name:   "child",
			Usage:  "a benchmark child process (started by meridian bench; speaks JSON lines on stdin/stdout)",
			Hidden: true,
			Action: func(c *cli.Context) error {
				return benchmark.RunChild(c.Context, os.Stdin, c.App.Writer)
			},
		}},
	}
}

// writeReport prints a benchmark report as one JSON object or as its table.
func writeReport(w io.Writer, asJSON bool, rep any, table func(io.Writer) error) error {
	if !asJSON {
		return table(w)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// parseSweep reads --subscribers: counts, ascending; the last is the
// subscribers of the run, the others the points below it.
func parseSweep(list []string) (points []int, subscribers int, err error) {
	if len(list) == 0 {
		return nil, 0, errors.New("want a count, or counts ascending")
	}
	for _, v := range list {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, 0, fmt.Errorf("%q is not a positive count", v)
		}
		if len(points) > 0 && n <= points[len(points)-1] {
			return nil, 0, fmt.Errorf("counts %v: want them ascending", list)
		}
		points = append(points, n)
	}
	return points[:len(points)-1], points[len(points)-1], nil
}
