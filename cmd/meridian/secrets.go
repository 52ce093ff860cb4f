package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsauth"
)

type secretsConfig struct {
	Out         string
	Hosts       []string
	Gateways    []string
	ClientCerts bool
	Rotate      bool
	Retire      bool
}

func secretsCommand() *cli.Command {
	var cfg secretsConfig
	return &cli.Command{
		Name:  "secrets",
		Usage: "generate the CA, NATS server certificate, per-role NKeys and the NATS authorization config",
		Description: "Writes into --out: ca.pem and ca-key.pem, nats-server.pem and nats-server-key.pem (names from --host),\n" +
			"one NKey seed <id>.nk per identity (operator, aggregator, edge, gateway.<region>[.<instance>]), with\n" +
			"--client-certs a certificate <id>.pem/<id>-key.pem each, and nats-auth.conf (public keys and\n" +
			"least-privilege permissions; pass it to `meridian nats --auth-config`). A directory that already holds\n" +
			"nats-auth.conf is left alone (safe to run at every start-up) unless --rotate is given: then the CA is\n" +
			"kept and everything else is replaced, the previous keys staying valid until the next rotation.",
		Flags: bindEnv([]cli.Flag{
			&cli.StringFlag{Name: "out", Value: "./.meridian/secrets", Usage: "directory to write (created with mode 0700)", Destination: &cfg.Out},
			&cli.StringSliceFlag{Name: "host", Usage: "NATS server host name or IP for its certificate (repeat; default localhost and 127.0.0.1)"},
			&cli.StringSliceFlag{Name: "gateway", Usage: "gateway credential REGION/INSTANCE (publishes only its own reports) or REGION (any instance of the region, for scaled replicas); repeat"},
			&cli.BoolFlag{Name: "client-certs", Usage: "also write a client certificate per identity, for `meridian nats --tls-verify`", Destination: &cfg.ClientCerts},
			&cli.DurationFlag{Name: "validity", Value: natsauth.DefaultValidity, Usage: "validity of the server and client certificates (the CA gets ten times as long)"},
			&cli.BoolFlag{Name: "retire-previous", Usage: "after a rotation, once every role uses its new key: drop the previous keys from nats-auth.conf", Destination: &cfg.Retire},
			&cli.BoolFlag{Name: "rotate", Usage: "replace the server certificate, every seed and client certificate, keeping the CA; previous keys stay valid until the next rotation", Destination: &cfg.Rotate},
		}),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			spec := natsauth.Spec{
				Dir: cfg.Out, Hosts: c.StringSlice("host"), ClientCerts: cfg.ClientCerts,
				Validity: c.Duration("validity"), Rotate: cfg.Rotate, Retire: cfg.Retire,
			}
			if cfg.Rotate && cfg.Retire {
				return usageError("--rotate and --retire-previous are separate steps: rotate, move every role to its new key, then retire")
			}
			if spec.Validity <= 0 {
				return usageError("--validity %s: must be positive", spec.Validity)
			}
			for _, g := range c.StringSlice("gateway") {
				region, instance, _ := strings.Cut(g, "/")
				if _, err := natsauth.GatewayPermissions(region, instance); err != nil {
					return usageError("--gateway %q: want REGION or REGION/INSTANCE: %v", g, err)
				}
				spec.Gateways = append(spec.Gateways, natsauth.Gateway{Region: region, Instance: instance})
			}
			res, err := natsauth.Generate(spec)
			if err != nil {
				return cli.Exit(fmt.Sprintf("secrets: %v", err), 1)
			}
			if res.Kept {
				log.Info("secrets already present; left as they are (use --rotate to replace them)", "dir", cfg.Out, "identities", res.IDs)
				return nil
			}
			log.Info("secrets written", "dir", cfg.Out, "identities", res.IDs, "rotated", cfg.Rotate, "retired_previous", cfg.Retire)
			return nil
		},
	}
}
