package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/proto"
)

const defaultWatchURL = "ws://127.0.0.1" + edge.DefaultListen + "/ws/metrics"

type watchConfig struct {
	URLs    []string
	Metrics []string
	// Show is the set of metrics printed, from Metrics; 0 prints every
	// metric a snapshot carries (snapshots carry the guide's six whatever
	// the subscription names).
	Show             proto.MetricSet
	Interval         int
	History          bool
	Count            int
	ReconnectTimeout time.Duration
	Raw              bool
	Latency          bool
	Token            string
	CAFile           string
	dial             wsclient.Options
}

func watchCommand() *cli.Command {
	var cfg watchConfig
	return &cli.Command{
		Name:      "watch",
		Usage:     "subscribe to /ws/metrics and print each Snapshot as a line",
		ArgsUsage: "[URL ...] (flags go before the URLs)",
		Description: "Connects to the first edge URL (default ws://127.0.0.1:5900/ws/metrics), subscribes, and prints\n" +
			"one line per Snapshot. With several URLs it fails over to the next one when a connection is lost,\n" +
			"and resubscribes. While no edge answers it says so on every attempt, and it gives up after\n" +
			"--reconnect-timeout (exit 1). A refusal that retrying cannot fix (a bad query parameter, an\n" +
			"unknown scope, any other 4xx but 408 and 429) ends it at once (exit 1); a URL that is not ws://\n" +
			"or wss://, or a flag written after the URLs, is a usage error (exit 2).",
		Flags: bindEnv([]cli.Flag{
			&cli.StringSliceFlag{Name: "metrics", Usage: "metrics to subscribe to and print (default the guide's six): " + strings.Join(proto.MetricNames(), ", ")},
			&cli.IntFlag{Name: "interval", Value: 1, Usage: "seconds between snapshots, 1 to 60", Destination: &cfg.Interval},
			&cli.BoolFlag{Name: "history", Usage: "request history (TimeSeries) first", Destination: &cfg.History},
			&cli.IntFlag{Name: "count", Usage: "exit after this many snapshots (0: run until interrupted)", Destination: &cfg.Count},
			&cli.DurationFlag{Name: "reconnect-timeout", Value: 30 * time.Second, Usage: "give up when no edge answers for this long", Destination: &cfg.ReconnectTimeout},
			&cli.BoolFlag{Name: "raw", Usage: "print every message as received (JSON)", Destination: &cfg.Raw},
			&cli.BoolFlag{Name: "latency", Usage: "also subscribe to the latency percentiles (latency_p50_ms … latency_max_ms)", Destination: &cfg.Latency},
			&cli.StringFlag{Name: "token", Usage: "the edge's JWT (see meridian token), or @path to read it from a file (keeps it out of ps); sent as Authorization: Bearer", Destination: &cfg.Token},
			&cli.StringFlag{Name: "ca-file", Usage: "PEM CA certificates trusted for wss:// (default: the system roots)", Destination: &cfg.CAFile},
		}),
		Action: func(c *cli.Context) error {
			cfg.URLs = c.Args().Slice()
			if len(cfg.URLs) == 0 {
				cfg.URLs = []string{defaultWatchURL}
			}
			for _, u := range cfg.URLs {
				if err := checkWatchURL(u); err != nil {
					return err
				}
			}
			cfg.Metrics = c.StringSlice("metrics")
			if cfg.Latency {
				if len(cfg.Metrics) == 0 { // the default columns, plus the latency ones
					for _, m := range proto.GuideMetrics.Metrics() {
						cfg.Metrics = append(cfg.Metrics, m.String())
					}
				}
				for m := proto.LatencyP50; m <= proto.LatencyMax; m++ {
					cfg.Metrics = append(cfg.Metrics, m.String())
				}
			}
			if cfg.Interval < proto.MinIntervalSeconds || cfg.Interval > proto.MaxIntervalSeconds {
				return usageError("--interval %d: must be from 1 to 60", cfg.Interval)
			}
			for _, name := range cfg.Metrics {
				m, ok := proto.ParseMetric(name)
				if !ok {
					return usageError("--metrics: unknown metric %q; valid: %s", name, strings.Join(proto.MetricNames(), ", "))
				}
				cfg.Show = cfg.Show.With(m)
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
			if refused, ok := errors.AsType[*wsclient.HandshakeError](err); ok && refused.Permanent() {
				return cli.Exit(fmt.Sprintf("%s: %v", url, refused), 1)
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

// dialAny tries the URLs round-robin from *next until one answers or timeout
// passes, saying on errOut why each attempt failed and when the next comes.
// A refusal that retrying cannot fix ends it at once, with the URL that
// refused.
func dialAny(ctx context.Context, urls []string, next *int, timeout time.Duration, opts wsclient.Options, errOut io.Writer) (*wsclient.Client, string, error) {
	deadline := time.Now().Add(timeout)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		url := urls[*next%len(urls)]
		*next++
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := wsclient.DialWith(dctx, url, opts)
		cancel()
		if err == nil {
			return c, url, nil
		}
		if ctx.Err() != nil {
			return nil, url, ctx.Err()
		}
		if refused, ok := errors.AsType[*wsclient.HandshakeError](err); ok && refused.Permanent() {
			return nil, url, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, url, err
		}
		wait := time.Duration(0)
		if attempt%len(urls) == 0 { // a full round failed: back off
			wait = min(backoff, left)
			backoff = min(backoff*2, 2*time.Second)
		}
		if wait == 0 {
			fmt.Fprintf(errOut, "attempt %d: %v; trying %s next (giving up in %s)\n",
				attempt, err, urls[*next%len(urls)], left.Round(100*time.Millisecond))
			continue
		}
		fmt.Fprintf(errOut, "attempt %d: %v; retrying in %s (giving up in %s)\n",
			attempt, err, wait.Round(time.Millisecond), left.Round(100*time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, url, ctx.Err()
		case <-t.C:
		}
	}
}

// checkWatchURL refuses, as a usage error, what is not a WebSocket URL —
// among them a flag written after the URLs, which the command line parser
// leaves among the arguments.
func checkWatchURL(s string) error {
	if strings.HasPrefix(s, "-") {
		return usageError("%s after the URLs: write flags before the URLs (meridian watch --count 3 %s)", s, defaultWatchURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return usageError("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return usageError("%q is not a WebSocket URL: the scheme must be ws:// or wss://, such as %s", s, defaultWatchURL)
	}
	if u.Host == "" {
		return usageError("%q names no host, such as %s", s, defaultWatchURL)
	}
	return nil
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
			printEvent(out, errOut, ev, cfg.Show)
		}
		if ev.Type == proto.EventSnapshot {
			*seen++
			if cfg.Count > 0 && *seen >= cfg.Count {
				return nil
			}
		}
	}
}

func printEvent(out, errOut io.Writer, ev proto.Event, show proto.MetricSet) {
	switch ev.Type {
	case proto.EventSnapshot:
		var b strings.Builder
		b.WriteString(ev.Timestamp.UTC().Format("2006-01-02T15:04:05Z"))
		for _, name := range proto.MetricNames() {
			v, ok := ev.Values[name]
			if m, _ := proto.ParseMetric(name); !ok || show != 0 && !show.Has(m) {
				continue
			}
			switch name {
			case "avg_response_time":
				fmt.Fprintf(&b, "  avg=%.2fms", v)
			case "success_rate":
				fmt.Fprintf(&b, "  success_rate=%.2f%%", v)
			case "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms":
				fmt.Fprintf(&b, "  %s=%.2fms", strings.TrimSuffix(strings.TrimPrefix(name, "latency_"), "_ms"), v)
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
