package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsnode"
)

type natsConfig struct {
	Listen      string
	DataDir     string
	Name        string
	ClusterName string
	ClusterAddr string
	Routes      []string
	MonitorPort int
	LameDuck    time.Duration
	MetricsAddr string
	Namespace   string
	AuthConfig  string
	TLSCert     string
	TLSKey      string
	TLSCA       string
	TLSVerify   bool
}

func natsCommand() *cli.Command {
	var cfg natsConfig
	return &cli.Command{
		Name:  "nats",
		Usage: "run a standalone NATS server node with JetStream (embedded nats-server)",
		Description: "Runs one NATS server with JetStream storing under --data-dir. With --cluster-name and\n" +
			"--routes it joins a NATS cluster. SIGTERM/Ctrl-C shuts it down in lame-duck mode.\n" +
			portsNote("--listen (default "+strconv.Itoa(natsnode.DefaultPort)+"), --metrics-listen (default "+defaultNATSMetricsListen+"; empty: none), --cluster-listen\n"+
				"with --cluster-name, --monitor-port when set"),
		Flags: bindEnv([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "0.0.0.0:" + strconv.Itoa(natsnode.DefaultPort), Usage: "client listen address", Destination: &cfg.Listen},
			&cli.StringFlag{Name: "data-dir", Value: "./.meridian/nats", Usage: "JetStream store directory", Destination: &cfg.DataDir},
			&cli.StringFlag{Name: "name", Usage: "server name, unique in the cluster (default: generated)", Destination: &cfg.Name},
			&cli.StringFlag{Name: "cluster-name", Usage: "NATS cluster name; empty runs standalone", Destination: &cfg.ClusterName},
			&cli.StringFlag{Name: "cluster-listen", Value: "0.0.0.0:6222", Usage: "cluster (route) listen address", Destination: &cfg.ClusterAddr},
			&cli.StringSliceFlag{Name: "routes", Usage: "cluster routes, e.g. nats-route://nats-2:6222 (repeat or comma-separate)"},
			&cli.IntFlag{Name: "monitor-port", Usage: "NATS HTTP monitoring port (/varz, /jsz); 0 disables", Destination: &cfg.MonitorPort},
			&cli.StringFlag{Name: "metrics-listen", Value: defaultNATSMetricsListen, Usage: "address for /metrics (server figures as Prometheus metrics), /healthz, /readyz; empty disables", Destination: &cfg.MetricsAddr},
			&cli.StringFlag{Name: "namespace", Value: natsnode.DefaultNamespace, Usage: "metric name prefix", Destination: &cfg.Namespace},
			&cli.StringFlag{Name: "auth-config", Usage: "NATS config file whose authorization block (users, nkeys, permissions) is enforced, e.g. nats-auth.conf from `meridian secrets`; without it the server listens on loopback only", Destination: &cfg.AuthConfig},
			&cli.StringFlag{Name: "tls-cert", Usage: "server certificate file: TLS on the client and route ports", Destination: &cfg.TLSCert},
			&cli.StringFlag{Name: "tls-key", Usage: "server private key file", Destination: &cfg.TLSKey},
			&cli.StringFlag{Name: "tls-ca", Usage: "CA file verifying route peers (always) and clients (with --tls-verify)", Destination: &cfg.TLSCA},
			&cli.BoolFlag{Name: "tls-verify", Usage: "require client certificates signed by --tls-ca (mutual TLS)", Destination: &cfg.TLSVerify},
			&cli.DurationFlag{Name: "lame-duck", Value: 5 * time.Second, Usage: "lame-duck period on shutdown, letting clients move to other nodes", Destination: &cfg.LameDuck},
		}),
		Action: func(c *cli.Context) error {
			cfg.Routes = c.StringSlice("routes")
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			host, port, err := splitHostPort("--listen", cfg.Listen)
			if err != nil {
				return err
			}
			if port == 0 {
				port = -1 // natsnode: -1 picks a free port
			}
			host = loopbackUnlessSecured(cfg.AuthConfig, "--listen", host, log)
			ncfg := natsnode.Config{
				Name: cfg.Name, Host: host, Port: port, StoreDir: cfg.DataDir,
				MonitorPort: cfg.MonitorPort, LameDuck: cfg.LameDuck, Logger: log,
				AuthConfig: cfg.AuthConfig, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey, TLSCA: cfg.TLSCA, VerifyClients: cfg.TLSVerify,
			}
			if cfg.AuthConfig != "" && cfg.TLSCert == "" {
				log.Warn("--auth-config without --tls-cert: clients authenticate, but their traffic crosses the network in clear text")
			}
			if cfg.ClusterName != "" {
				chost, cport, err := splitHostPort("--cluster-listen", cfg.ClusterAddr)
				if err != nil {
					return err
				}
				chost = loopbackUnlessSecured(cfg.AuthConfig, "--cluster-listen", chost, log)
				ncfg.ClusterName, ncfg.ClusterHost, ncfg.ClusterPort, ncfg.Routes = cfg.ClusterName, chost, cport, cfg.Routes
			}
			if err := ncfg.Validate(); err != nil {
				return usageError("%v", err)
			}
			var metricsLn net.Listener
			if cfg.MetricsAddr != "" {
				if metricsLn, err = listenFlag("metrics-listen", cfg.MetricsAddr); err != nil {
					return err
				}
				defer metricsLn.Close()
			}
			node, err := natsnode.New(ncfg)
			if err != nil {
				return usageError("%v", err)
			}
			if err := node.Start(c.Context); err != nil {
				return err
			}
			log.Info("nats server ready", "url", node.ClientURL(), "data_dir", cfg.DataDir, "cluster", cfg.ClusterName,
				"auth", ncfg.Secured(), "tls", cfg.TLSCert != "", "mtls", cfg.TLSVerify)
			g, ctx := newGroup(c.Context)
			if metricsLn != nil {
				reg := newRegistry()
				reg.MustRegister(node.Collector(cfg.Namespace))
				g.Go(func() error { return serveListener(ctx, metricsLn, adminMux(reg, node.Ready), log) })
			}
			if ncfg.Secured() || cfg.TLSCert != "" {
				hup := make(chan os.Signal, 1)
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
				g.Go(func() error { reloadOnHangup(ctx, hup, node, log); return nil })
			}
			<-ctx.Done()
			log.Info("nats server shutting down", "lame_duck", cfg.LameDuck)
			sctx, cancel := context.WithTimeout(context.Background(), cfg.LameDuck+10*time.Second)
			defer cancel()
			err = node.Shutdown(sctx)
			if gerr := g.Wait(); gerr != nil {
				return gerr
			}
			return err
		},
	}
}

func splitHostPort(flag, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, usageError("%s %q: want host:port: %v", flag, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, usageError("%s %q: port must be a number from 0 to 65535", flag, addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// loopbackUnlessSecured keeps a server without an authorization config off
// the network: a non-loopback host becomes 127.0.0.1, and the log says so.
func loopbackUnlessSecured(authConfig, flag, host string, log *slog.Logger) string {
	if authConfig != "" || natsnode.IsLoopback(host) {
		return host
	}
	log.Warn("no --auth-config: anyone could publish forged reports and snapshots, so listening on loopback only",
		"flag", flag, "asked", host, "listening", "127.0.0.1")
	return "127.0.0.1"
}

// reloadOnHangup re-reads the authorization config and TLS files on every
// SIGHUP until ctx ends: rotated keys and certificates take effect without
// a restart. A failed reload keeps the running settings.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, node *natsnode.Node, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := node.ReloadSecurity(); err != nil {
				log.Error("SIGHUP: reload of the authorization config and TLS files failed; the running ones stay", "err", err)
				continue
			}
			log.Info("SIGHUP: authorization config and TLS files reloaded")
		}
	}
}
