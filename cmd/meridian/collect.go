package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/collector"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/proto"
)

// defaultCollectAdminListen is the collector's admin address, apart from
// the other roles' so that a collector can run on a gateway's host.
const defaultCollectAdminListen = ":9104"

type collectConfig struct {
	Region          string
	Instance        string
	NATS            natsClientConfig
	PublishInterval time.Duration
	AdminListen     string
	Namespace       string
	Checkpoint      string

	AccessLog      string
	Format         string
	Regex          string
	StatusField    string
	DurationField  string
	DurationUnit   string
	FromStart      bool
	PollInterval   time.Duration
	RotateWait     time.Duration
	SyslogListen   string
	StubStatus     string
	ScrapeURL      string
	Profile        string
	Mapping        string
	ScrapeInterval time.Duration
	ScrapeMatch    []string
}

func collectCommand() *cli.Command {
	var cfg collectConfig
	return &cli.Command{
		Name:  "collect",
		Usage: "publish a third-party gateway's requests (access log, syslog or metrics endpoint) as an instance report",
		Description: "Runs beside one gateway instance and publishes its cumulative report on\n" +
			"meridian.report.<region>.<instance> exactly as `meridian gateway` does. One source:\n" +
			"  --access-log FILE --access-log-format nginx-json|nginx-combined|apache|haproxy|caddy|json|regex\n" +
			"      exact: every line is one request with its status and duration. Follows rotation by\n" +
			"      rename and by copytruncate; with --checkpoint a restart (kill -9 included) neither\n" +
			"      loses nor double counts a line.\n" +
			"  --syslog-listen udp://127.0.0.1:5140|unix:///path  (HAProxy's `log` target)\n" +
			"      exact while running; messages sent while the collector is down are lost.\n" +
			"  --scrape-url URL --profile caddy|haproxy|envoy|traefik|kairos (or --mapping FILE)\n" +
			"      exact counts by status class; latency approximate: the source's histogram is\n" +
			"      re-bucketed (see README). A counter reset (gateway restart) starts a new boot.\n" +
			"      Sources exposing only an average (no histogram) give avg_response_time only.\n" +
			"active_connections: --stub-status URL (nginx), or the profile's in-flight gauge\n" +
			"(HAProxy current sessions, Caddy in-flight); otherwise unavailable and reported as 0.\n" +
			portsNote("--admin-listen (default "+defaultCollectAdminListen+")"),
		Flags: bindEnv(append([]cli.Flag{
			&cli.StringFlag{Name: "region", Required: true, Usage: "region of the gateway instance", Destination: &cfg.Region},
			&cli.StringFlag{Name: "instance", Usage: "instance id, unique in the cluster (default: the hostname)", Destination: &cfg.Instance},
			&cli.DurationFlag{Name: "publish-interval", Value: collector.DefaultInterval, Usage: "time between reports", Destination: &cfg.PublishInterval},
			&cli.StringFlag{Name: "admin-listen", Value: defaultCollectAdminListen, Usage: "address for /metrics, /healthz, /readyz", Destination: &cfg.AdminListen},
			&cli.StringFlag{Name: "namespace", Value: collector.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
			&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint file; strongly advised: without it every start is a new boot and a log is read from its end", Destination: &cfg.Checkpoint},
			&cli.StringFlag{Name: "access-log", Usage: "access log file to tail", Destination: &cfg.AccessLog},
			&cli.StringFlag{Name: "access-log-format", Value: collector.FormatNginxCombined, Usage: "format of the access log or syslog lines: " + strings.Join(collector.LogFormats, ", "), Destination: &cfg.Format},
			&cli.StringFlag{Name: "access-log-regex", Usage: "format regex: a Go regexp with (?P<status>...) and (?P<duration>...)", Destination: &cfg.Regex},
			&cli.StringFlag{Name: "access-log-status-field", Usage: "format json: the status field (default status)", Destination: &cfg.StatusField},
			&cli.StringFlag{Name: "access-log-duration-field", Usage: "format json: the duration field (default duration)", Destination: &cfg.DurationField},
			&cli.StringFlag{Name: "access-log-duration-unit", Usage: "formats json and regex: s, ms, us or ns (default s)", Destination: &cfg.DurationUnit},
			&cli.BoolFlag{Name: "from-start", Usage: "first start without a checkpoint: count the lines already in the log", Destination: &cfg.FromStart},
			&cli.DurationFlag{Name: "poll-interval", Value: collector.DefaultPollInterval, Usage: "how often the log is checked for lines and rotation", Destination: &cfg.PollInterval},
			&cli.DurationFlag{Name: "rotate-wait", Value: collector.DefaultRotateWait, Usage: "how long a renamed log is still read after it last grew", Destination: &cfg.RotateWait},
			&cli.StringFlag{Name: "syslog-listen", Usage: "receive access-log lines as syslog datagrams: udp://127.0.0.1:5140 or unix:///path", Destination: &cfg.SyslogListen},
			&cli.StringFlag{Name: "stub-status", Usage: "nginx stub_status URL for active_connections", Destination: &cfg.StubStatus},
			&cli.StringFlag{Name: "scrape-url", Usage: "Prometheus metrics endpoint of the gateway", Destination: &cfg.ScrapeURL},
			&cli.StringFlag{Name: "profile", Usage: "metric names of the scraped gateway: " + strings.Join(collector.ProfileNames(), ", "), Destination: &cfg.Profile},
			&cli.StringFlag{Name: "mapping", Usage: "JSON mapping file naming the scraped series (instead of --profile; see README)", Destination: &cfg.Mapping},
			&cli.StringSliceFlag{Name: "scrape-match", Usage: "label=value: only scraped series with this label (repeat), e.g. proxy=fe for HAProxy"},
			&cli.DurationFlag{Name: "scrape-interval", Value: collector.DefaultScrapeInterval, Usage: "time between scrapes", Destination: &cfg.ScrapeInterval},
		}, natsClientFlags(&cfg.NATS)...)),
		Action: func(c *cli.Context) error {
			cfg.ScrapeMatch = c.StringSlice("scrape-match")
			return runCollect(c, &cfg)
		},
	}
}

func runCollect(c *cli.Context, cfg *collectConfig) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if err := instanceIdentity(cfg.Region, &cfg.Instance); err != nil {
		return err
	}
	n := 0
	for _, v := range []string{cfg.AccessLog, cfg.SyslogListen, cfg.ScrapeURL} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return usageError("give exactly one source: --access-log, --syslog-listen or --scrape-url")
	}
	log = log.With("role", "collect", "instance", cfg.Instance)
	client := &http.Client{Timeout: 10 * time.Second}
	src, err := collectSource(cfg, client, log)
	if err != nil {
		return err
	}
	var active collector.ActiveFunc // a scrape source reads its own gauge
	if cfg.StubStatus != "" {
		active = collector.StubStatusActive(client, cfg.StubStatus)
	}
	adminLn, err := listenFlag("admin-listen", cfg.AdminListen)
	if err != nil {
		return err
	}
	defer adminLn.Close()
	// A collector publishes the same reports as a gateway: the gateway
	// role's permissions (its own report subject) are all it needs.
	nc, err := connectNATS(cfg.NATS, natsauth.RoleGateway, "meridian-collect-"+cfg.Instance, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := newRegistry()
	col, err := collector.NewCollector(collector.CollectorConfig{
		NATS: nc, Region: cfg.Region, Instance: cfg.Instance, Interval: cfg.PublishInterval, Logger: log,
		Source: src, Active: active, CheckpointPath: cfg.Checkpoint, Registerer: reg, Namespace: cfg.Namespace,
	})
	if err != nil {
		return err
	}
	registerNATSClient(reg, cfg.Namespace, "collect", nc)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: cfg.Namespace, Subsystem: "collector", Name: "info",
		Help:        "Always 1; labels name the gateway instance this collector reports (its boot changes when a scraped gateway restarts).",
		ConstLabels: prometheus.Labels{"instance": cfg.Instance, "region": cfg.Region},
	}, func() float64 { return 1 }))
	g, ctx := newGroup(c.Context)
	g.Go(func() error { return col.Run(ctx) })
	g.Go(func() error { return serveListener(ctx, adminLn, adminMux(reg, natsReady(nc)), log) })
	err = g.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = nc.FlushWithContext(sctx)
	return err
}

// collectSource builds the source the flags name.
func collectSource(cfg *collectConfig, client *http.Client, log *slog.Logger) (collector.Source, error) {
	if cfg.ScrapeURL != "" {
		m, err := scrapeMapping(cfg)
		if err == nil {
			m, err = withMatch(m, cfg.ScrapeMatch)
		}
		if err != nil {
			return nil, err
		}
		src, err := collector.NewScrapeSource(collector.ScrapeConfig{
			URL: cfg.ScrapeURL, Mapping: m, Interval: cfg.ScrapeInterval, Client: client, Logger: log,
		})
		if err != nil {
			return nil, usageError("%v", err)
		}
		return src, nil
	}
	parser, err := collector.NewLineParser(collector.LogFormat{
		Name: cfg.Format, Regex: cfg.Regex, StatusField: cfg.StatusField,
		DurationField: cfg.DurationField, DurationUnit: cfg.DurationUnit,
	})
	if err != nil {
		return nil, usageError("--access-log-format: %v", err)
	}
	if cfg.SyslogListen != "" {
		src, err := collector.NewSyslogSource(collector.SyslogConfig{
			Listen: cfg.SyslogListen, Parser: parser, Recorder: new(gateway.Recorder), Logger: log,
		})
		if err != nil {
			return nil, usageError("--syslog-listen: %v", err)
		}
		return src, nil
	}
	src, err := collector.NewLogSource(collector.LogConfig{
		Path: cfg.AccessLog, Parser: parser, Recorder: new(gateway.Recorder), FromStart: cfg.FromStart,
		PollInterval: cfg.PollInterval, RotateWait: cfg.RotateWait, Logger: log,
	})
	if err != nil {
		return nil, usageError("%v", err)
	}
	return src, nil
}

func scrapeMapping(cfg *collectConfig) (collector.Mapping, error) {
	switch {
	case cfg.Mapping != "" && cfg.Profile != "":
		return collector.Mapping{}, usageError("--profile and --mapping are alternatives: give one")
	case cfg.Mapping != "":
		m, err := collector.LoadMapping(cfg.Mapping)
		if err != nil {
			return collector.Mapping{}, usageError("--mapping: %v", err)
		}
		return m, nil
	case cfg.Profile != "":
		m, ok := collector.Profile(cfg.Profile)
		if !ok {
			return collector.Mapping{}, usageError("--profile %q: want one of %s", cfg.Profile, strings.Join(collector.ProfileNames(), ", "))
		}
		return m, nil
	default:
		return collector.Mapping{}, usageError("--scrape-url needs --profile or --mapping")
	}
}

// withMatch adds --scrape-match label=value pairs to m.
func withMatch(m collector.Mapping, pairs []string) (collector.Mapping, error) {
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return m, usageError("--scrape-match %q: want label=value", p)
		}
		if m.Match == nil {
			m.Match = map[string]string{}
		}
		m.Match[k] = v
	}
	return m, nil
}

// instanceIdentity defaults --instance to the hostname (a container's, in
// compose) and checks both names, for the roles that report an instance.
func instanceIdentity(region string, instance *string) error {
	if *instance == "" {
		host, err := os.Hostname()
		if err != nil {
			return usageError("--instance not set and the hostname is unknown: %v", err)
		}
		*instance = host
	}
	for flag, v := range map[string]string{"region": region, "instance": *instance} {
		if err := proto.ValidateToken(flag, v); err != nil {
			return usageError("--%s: %v", flag, err)
		}
	}
	return nil
}
