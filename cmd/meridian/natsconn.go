package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/broker/natsnode"
)

// natsClientConfig is how a role reaches NATS: the URLs, one way to
// authenticate, and TLS. Every role that talks to NATS takes the same flags
// (natsClientFlags) and connects through connectNATS.
type natsClientConfig struct {
	URL      string
	User     string
	Password string
	Token    string
	NKey     string // NKey seed file
	Creds    string // .creds file: user JWT and NKey seed
	CA       string
	Cert     string
	Key      string
}

// natsClientFlags are the shared NATS client flags; bindEnv gives each its
// MERIDIAN_NATS_* variable (secrets are better passed that way, or as
// files, than on a command line other users can read).
func natsClientFlags(c *natsClientConfig) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats-url", Value: natsnode.DefaultURL, Usage: "NATS server URL(s), comma-separated", Destination: &c.URL},
		&cli.StringFlag{Name: "nats-user", Usage: "NATS user name (with --nats-password)", Destination: &c.User},
		&cli.StringFlag{Name: "nats-password", Usage: "NATS password (prefer MERIDIAN_NATS_PASSWORD to the flag)", Destination: &c.Password},
		&cli.StringFlag{Name: "nats-token", Usage: "NATS authentication token (prefer MERIDIAN_NATS_TOKEN)", Destination: &c.Token},
		&cli.StringFlag{Name: "nats-nkey", Usage: "file holding this role's NKey seed (meridian secrets writes <id>.nk)", Destination: &c.NKey},
		&cli.StringFlag{Name: "nats-creds", Usage: ".creds file (user JWT and NKey seed) for NATS decentralized auth", Destination: &c.Creds},
		&cli.StringFlag{Name: "nats-ca", Usage: "CA certificate file that verifies the NATS servers; enables TLS", Destination: &c.CA},
		&cli.StringFlag{Name: "nats-cert", Usage: "client certificate file for mutual TLS (with --nats-key)", Destination: &c.Cert},
		&cli.StringFlag{Name: "nats-key", Usage: "client private key file for mutual TLS", Destination: &c.Key},
	}
}

// options turns the configuration into nats.Options. Conflicting or
// incomplete settings and unreadable files are usage errors.
func (c natsClientConfig) options() ([]nats.Option, error) {
	var opts []nats.Option
	methods := 0
	for _, set := range []bool{c.User != "", c.Token != "", c.NKey != "", c.Creds != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return nil, usageError("--nats-user, --nats-token, --nats-nkey and --nats-creds are alternatives: set one")
	}
	if c.Password != "" && c.User == "" {
		return nil, usageError("--nats-password needs --nats-user")
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, usageError("--nats-cert and --nats-key go together")
	}
	for flag, path := range map[string]string{"--nats-nkey": c.NKey, "--nats-creds": c.Creds, "--nats-ca": c.CA, "--nats-cert": c.Cert, "--nats-key": c.Key} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return nil, usageError("%s %q: %v", flag, path, err)
		}
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, usageError("--nats-nkey %q: %v", c.NKey, err)
		}
		opts = append(opts, o)
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Cert != "" {
		opts = append(opts, nats.ClientCert(c.Cert, c.Key))
	}
	return opts, nil
}

// connectNATS opens the client connection a role uses, with the role's
// reply-subject prefix (its NATS permissions allow only its own inboxes).
// It never gives up on an unreachable server: a role started before its
// NATS server (docker compose) connects when the server appears, and
// reconnects after any outage.
func connectNATS(cfg natsClientConfig, role natsauth.Role, name string, log *slog.Logger) (*nats.Conn, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("nats connected", "url", nc.ConnectedUrl()) }),
		nats.ErrorHandler(newNATSErrorLog(log, time.Now).handle),
	)
	if p := natsauth.InboxPrefix(role); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", cfg.URL, err)
	}
	return nc, nil
}
