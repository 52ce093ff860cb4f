package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/proto"
)

type watchConfig struct {
	URLs             []string
	Metrics          []string
	Interval         int
	History          bool
	Count            int
	ReconnectTimeout time.Duration
	Raw              bool
	Token            string
	CAFile           string
	dial             wsclient.Options
}

func watchCommand() *cli.Command {
	var cfg watchConfig
	return &cli.Command{
		Name:      "watch",
		Usage:     "subscribe to /ws/metrics and print each Snapshot as a line",
		ArgsUsage: "[URL ...]",
		Description: "Connects to the first edge URL (default ws://127.0.0.1:5900/ws/metrics), subscribes, and prints\n" +
			"one line per Snapshot. With several URLs it fails over to the next one when a connection is lost,\n" +
			"and resubscribes. Exits non-zero when no edge can be reached.",
		Flags: bindEnv([]cli.Flag{
			&cli.StringSliceFlag{Name: "metrics", Usage: "metrics to subscribe to (default all): " + strings.Join(proto.MetricNames(), ", ")},
			&cli.IntFlag{Name: "interval", Value: 1, Usage: "seconds between snapshots, 1 to 60", Destination: &cfg.Interval},
			&cli.BoolFlag{Name: "history", Usage: "request history (TimeSeries) first", Destination: &cfg.History},
			&cli.IntFlag{Name: "count", Usage: "exit after this many snapshots (0: run until interrupted)", Destination: &cfg.Count},
			&cli.DurationFlag{Name: "reconnect-timeout", Value: 30 * time.Second, Usage: "give up when no edge answers for this long", Destination: &cfg.ReconnectTimeout},
			&cli.BoolFlag{Name: "raw", Usage: "print every message as received (JSON)", Destination: &cfg.Raw},
			&cli.StringFlag{Name: "token", Usage: "the edge's JWT (see meridian token), or @path to read it from a file (keeps it out of ps); sent as Authorization: Bearer", Destination: &cfg.Token},
			&cli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates trusted for wss:// (default: the system roots)", Destination: &cfg.CAFile},
		}),
		Action: func(c *cli.Context) error {
			cfg.URLs = c.Args().Slice()
			if len(cfg.URLs) == 0 {
				cfg.URLs = []string{"ws://127.0.0.1:5900/ws/metrics"}
			}
			cfg.Metrics = c.StringSlice("metrics")
			if cfg.Interval < proto.MinIntervalSeconds || cfg.Interval > proto.MaxIntervalSeconds {
				return usageError("--interval %d: must be from 1 to 60", cfg.Interval)
			}
			for _, m := range cfg.Metrics {
				if _, ok := proto.ParseMetric(m); !ok {
					return usageError("--metrics: unknown metric %q; valid: %s", m, strings.Join(proto.MetricNames(), ", "))
				}
			}
			cfg.dial.Token = cfg.Token
			if path, ok := strings.CutPrefix(cfg.Token, "@"); ok {
				b, err := os.ReadFile(path)
				if err != nil {
					return usageError("--token: %v", err)
				}
				cfg.dial.Token = strings.TrimSpace(string(b))
			}
			if cfg.CAFile != "" {
				b, err := os.ReadFile(cfg.CAFile)
				if err != nil {
					return usageError("--ca-file: %v", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(b) {
					return usageError("--ca-file %s: no PEM certificate in it", cfg.CAFile)
				}
				cfg.dial.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			return watch(c.Context, cfg, c.App.Writer, c.App.ErrWriter)
		},
	}
}

func watch(ctx context.Context, cfg watchConfig, out, errOut io.Writer) error {
	sub := map[string]any{"metrics": cfg.Metrics, "interval_seconds": cfg.Interval, "include_history": cfg.History}
	if cfg.Metrics == nil {
		sub["metrics"] = []string{}
	}
	seen := 0
	next := 0 // index of the URL to try next
	connectedOnce := false
	for {
		client, url, err := dialAny(ctx, cfg.URLs, &next, cfg.ReconnectTimeout, cfg.dial, errOut)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !connectedOnce {
				return cli.Exit(fmt.Sprintf("cannot connect to %s: %v", strings.Join(cfg.URLs, " or "), err), 1)
			}
			return cli.Exit(fmt.Sprintf("lost the connection and no edge answered for %s: %v", cfg.ReconnectTimeout, err), 1)
		}
		if connectedOnce {
			fmt.Fprintf(errOut, "reconnected to %s\n", url)
		}
		connectedOnce = true
		err = watchConn(ctx, client, sub, cfg, out, errOut, &seen)
		client.Close()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(errOut, "connection to %s lost: %v\n", url, err)
	}
}

// dialAny tries the URLs round-robin from *next until one answers or timeout.
func dialAny(ctx context.Context, urls []string, next *int, timeout time.Duration, opts wsclient.Options, errOut io.Writer) (*wsclient.Client, string, error) {
	deadline := time.Now().Add(timeout)
	backoff := 100 * time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		url := urls[*next%len(urls)]
		*next++
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := wsclient.DialWith(dctx, url, opts)
		cancel()
		if err == nil {
			return c, url, nil
		}
		last = err
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, "", last
		}
		if (attempt+1)%len(urls) == 0 { // a full round failed: back off
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, "", ctx.Err()
			case <-t.C:
			}
			backoff = min(backoff*2, 2*time.Second)
		}
	}
}

// watchConn reads one connection until it fails (error), the count is
// reached or ctx ends (nil).
func watchConn(ctx context.Context, c *wsclient.Client, sub map[string]any, cfg watchConfig, out, errOut io.Writer, seen *int) error {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := c.Subscribe(wctx, sub)
	cancel()
	if err != nil {
		return err
	}
	for {
		data, err := c.NextRaw(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ce wsclient.ClosedError
			if errors.As(err, &ce) {
				return fmt.Errorf("server closed the connection: %d %s", ce.Code, ce.Reason)
			}
			return err
		}
		ev, err := proto.DecodeEvent(data)
		if err != nil {
			fmt.Fprintf(errOut, "unreadable message: %v\n", err)
			continue
		}
		if cfg.Raw {
			fmt.Fprintln(out, string(data))
		} else {
			printEvent(out, errOut, ev)
		}
		if ev.Type == proto.EventSnapshot {
			*seen++
			if cfg.Count > 0 && *seen >= cfg.Count {
				return nil
			}
		}
	}
}

func printEvent(out, errOut io.Writer, ev proto.Event) {
	switch ev.Type {
	case proto.EventSnapshot:
		var b strings.Builder
		b.WriteString(ev.Timestamp.UTC().Format("2006-01-02T15:04:05Z"))
		for _, name := range proto.MetricNames() {
			v, ok := ev.Values[name]
			if !ok {
				continue
			}
			switch name {
			case "avg_response_time":
				fmt.Fprintf(&b, "  avg=%.2fms", v)
			case "success_rate":
				fmt.Fprintf(&b, "  success_rate=%.2f%%", v)
			default:
				fmt.Fprintf(&b, "  %s=%.0f", strings.TrimPrefix(name, "requests_"), v)
			}
		}
		fmt.Fprintln(out, b.String())
	case proto.EventTimeSeries:
		if n := len(ev.DataPoints); n > 0 {
			first, last := ev.DataPoints[0], ev.DataPoints[n-1]
			fmt.Fprintf(out, "history %s: %d points %s .. %s, last %g\n", ev.MetricName, n,
				first.Time.UTC().Format(time.RFC3339), last.Time.UTC().Format(time.RFC3339), last.Value)
		} else {
			fmt.Fprintf(out, "history %s: no points\n", ev.MetricName)
		}
	case proto.EventError:
		fmt.Fprintf(errOut, "server error: %s\n", ev.Message)
	}
}
