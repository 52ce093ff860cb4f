package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
)

type loadgenConfig struct {
	Targets     []string
	RPS         float64
	Duration    time.Duration
	Requests    int
	ErrorRatio  float64
	Concurrency int
	Timeout     time.Duration
}

func loadgenCommand() *cli.Command {
	var cfg loadgenConfig
	return &cli.Command{
		Name:  "loadgen",
		Usage: "send real HTTP load to gateways and report exactly what was sent and answered",
		Description: "Sends GET requests round-robin to the --target URLs at --rps until --duration or --requests is\n" +
			"reached, then prints how many were sent and how many got 2xx/3xx, 4xx/5xx or no response.\n" +
			"--error-ratio asks Meridian's demo upstream for a 500 on that fraction of requests (?status=500).",
		Flags: bindEnv([]cli.Flag{
			&cli.StringSliceFlag{Name: "target", Required: true, Usage: "gateway URL to load (repeat or comma-separate)"},
			&cli.Float64Flag{Name: "rps", Value: 50, Usage: "requests per second", Destination: &cfg.RPS},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to send; 0 with --requests 0 sends until interrupted, then reports", Destination: &cfg.Duration},
			&cli.IntFlag{Name: "requests", Usage: "stop after exactly this many requests (0: no limit)", Destination: &cfg.Requests},
			&cli.Float64Flag{Name: "error-ratio", Usage: "fraction of requests, 0 to 1, asking the demo upstream for a 500", Destination: &cfg.ErrorRatio},
			&cli.IntFlag{Name: "concurrency", Value: loadgen.DefaultConcurrency, Usage: "maximum requests in flight", Destination: &cfg.Concurrency},
			&cli.DurationFlag{Name: "timeout", Value: loadgen.DefaultTimeout, Usage: "per-request timeout", Destination: &cfg.Timeout},
		}),
		Action: func(c *cli.Context) error {
			cfg.Targets = c.StringSlice("target")
			res, err := loadgen.Run(c.Context, loadgen.Config{
				Targets: cfg.Targets, RPS: cfg.RPS, Duration: cfg.Duration, Requests: cfg.Requests,
				Continuous: cfg.Duration == 0 && cfg.Requests == 0,
				ErrorRatio: cfg.ErrorRatio, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
			})
			if errors.Is(err, loadgen.ErrInvalidConfig) {
				return cli.Exit(err.Error(), 2)
			}
			// An interrupted run still reports exactly what it sent.
			fmt.Fprintln(c.App.Writer, res.String())
			if err != nil && c.Context.Err() == nil {
				return err
			}
			return nil
		},
	}
}
