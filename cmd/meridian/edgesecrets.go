package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/certfile"
)

// Files `meridian edge-secrets` writes.
const (
	edgeCertFile   = "edge.pem"
	edgeKeyFile    = "edge-key.pem"
	edgeSecretFile = "edge-token.secret"
	// defaultEdgeCertValidity is the self-signed edge certificate's life.
	defaultEdgeCertValidity = 90 * 24 * time.Hour
)

func edgeSecretsCommand() *cli.Command {
	var (
		out      string
		validity time.Duration
		rotate   bool
	)
	return &cli.Command{
		Name:  "edge-secrets",
		Usage: "generate an edge's TLS certificate (self-signed) and its token HMAC secret",
		Description: "Writes into --out: edge.pem and edge-key.pem (a self-signed certificate naming every --host; clients\n" +
			"trust edge.pem itself, e.g. `meridian watch --ca-file edge.pem`) and edge-token.secret (48 random bytes,\n" +
			"base64) for `meridian edge --auth-hmac-secret-file` and `meridian token --hmac-secret-file`. A directory\n" +
			"that already holds all three is left alone (safe at every start-up) unless --rotate is given.",
		Flags: bindEnv([]cli.Flag{
			&cli.StringFlag{Name: "out", Value: "./.meridian/edge-secrets", Usage: "directory to write (created with mode 0700)", Destination: &out},
			&cli.StringSliceFlag{Name: "host", Usage: "edge host name or IP for the certificate (repeat; default localhost and 127.0.0.1)"},
			&cli.DurationFlag{Name: "validity", Value: defaultEdgeCertValidity, Usage: "validity of the certificate", Destination: &validity},
			&cli.BoolFlag{Name: "rotate", Usage: "replace the certificate and the secret (tokens minted with the old secret stop working)", Destination: &rotate},
		}),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			if validity <= 0 {
				return usageError("--validity %s: must be positive", validity)
			}
			hosts := c.StringSlice("host")
			if len(hosts) == 0 {
				hosts = []string{"localhost", "127.0.0.1"}
			}
			kept, err := writeEdgeSecrets(out, hosts, validity, rotate)
			if err != nil {
				return cli.Exit(fmt.Sprintf("edge-secrets: %v", err), 1)
			}
			log.Info("edge secrets", "dir", out, "kept", kept, "hosts", hosts)
			return nil
		},
	}
}

// writeEdgeSecrets writes the edge's certificate, key and token secret
// into dir, keeping a complete set unless rotate.
func writeEdgeSecrets(dir string, hosts []string, validity time.Duration, rotate bool) (kept bool, err error) {
	complete := true
	for _, f := range []string{edgeCertFile, edgeKeyFile, edgeSecretFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); errors.Is(err, fs.ErrNotExist) {
			complete = false
		} else if err != nil {
			return false, err
		}
	}
	if complete && !rotate {
		return true, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	if _, err := certfile.WriteSelfSignedFor(filepath.Join(dir, edgeCertFile), filepath.Join(dir, edgeKeyFile), validity, hosts...); err != nil {
		return false, err
	}
	secret := make([]byte, 48)
	if _, err := rand.Read(secret); err != nil {
		return false, fmt.Errorf("generate token secret: %w", err)
	}
	encoded := base64.StdEncoding.EncodeToString(secret) + "\n"
	if err := os.WriteFile(filepath.Join(dir, edgeSecretFile), []byte(encoded), 0o600); err != nil {
		return false, fmt.Errorf("write token secret: %w", err)
	}
	return false, nil
}
