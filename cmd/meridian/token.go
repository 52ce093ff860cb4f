package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/auth"
)

// DefaultTokenTTL is a minted token's lifetime unless --ttl says.
const DefaultTokenTTL = time.Hour

type tokenConfig struct {
	HMACSecretFile, PrivateKeyFile string
	Scopes                         cli.StringSlice
	TTL                            time.Duration
	Audience, Issuer, Subject, KID string
}

func tokenCommand() *cli.Command {
	var cfg tokenConfig
	return &cli.Command{
		Name:  "token",
		Usage: "mint a JWT for the edge's /ws/metrics and REST API (tests, development, scripts)",
		Description: "Prints a signed token on stdout: HS256 with --hmac-secret-file, or RS256/ES256/ES384/ES512/EdDSA\n" +
			"with --private-key-file (PEM). --scopes restricts it (cluster, region.<r>, instance.<i>, *);\n" +
			"without it the token reads every scope. Example:\n" +
			"  meridian token --hmac-secret-file secret --scopes region.eu --ttl 15m",
		Flags: bindEnv([]cli.Flag{
			&cli.StringFlag{Name: "hmac-secret-file", Usage: "file holding the HMAC secret the edge verifies with", Destination: &cfg.HMACSecretFile},
			&cli.StringFlag{Name: "private-key-file", Usage: "PEM private key (RSA, ECDSA or Ed25519) whose public key the edge holds", Destination: &cfg.PrivateKeyFile},
			&cli.StringSliceFlag{Name: "scopes", Usage: "scopes the token may read (repeat or comma-separate); default all", Destination: &cfg.Scopes},
			&cli.DurationFlag{Name: "ttl", Value: DefaultTokenTTL, Usage: "lifetime (exp = now + ttl)", Destination: &cfg.TTL},
			&cli.StringFlag{Name: "aud", Usage: "audience claim", Destination: &cfg.Audience},
			&cli.StringFlag{Name: "iss", Usage: "issuer claim", Destination: &cfg.Issuer},
			&cli.StringFlag{Name: "sub", Usage: "subject claim (who the token is for, for logs)", Destination: &cfg.Subject},
			&cli.StringFlag{Name: "kid", Usage: "key id header (for a JWKS)", Destination: &cfg.KID},
		}),
		Action: func(c *cli.Context) error {
			if (cfg.HMACSecretFile == "") == (cfg.PrivateKeyFile == "") {
				return usageError("give exactly one of --hmac-secret-file and --private-key-file")
			}
			if cfg.TTL <= 0 {
				return usageError("--ttl %s: want a positive duration", cfg.TTL)
			}
			o := auth.MintOptions{TTL: cfg.TTL, Audience: cfg.Audience, Issuer: cfg.Issuer, Subject: cfg.Subject, KeyID: cfg.KID}
			if c.IsSet("scopes") {
				o.Scopes = []string{}
				for _, s := range cfg.Scopes.Value() {
					if s = strings.TrimSpace(s); s != "" {
						o.Scopes = append(o.Scopes, s)
					}
				}
			}
			var (
				tok string
				err error
			)
			if cfg.HMACSecretFile != "" {
				secret, rerr := readSecretFile("hmac-secret-file", cfg.HMACSecretFile)
				if rerr != nil {
					return rerr
				}
				tok, err = auth.MintHMAC(secret, o)
			} else {
				b, rerr := os.ReadFile(cfg.PrivateKeyFile)
				if rerr != nil {
					return usageError("--private-key-file: %v", rerr)
				}
				key, perr := auth.ParsePrivateKeyPEM(b)
				if perr != nil {
					return usageError("--private-key-file: %v", perr)
				}
				tok, err = auth.MintKey(key, o)
			}
			if err != nil {
				return usageError("%v", err)
			}
			fmt.Fprintln(c.App.Writer, tok)
			return nil
		},
	}
}
