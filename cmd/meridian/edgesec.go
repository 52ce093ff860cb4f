package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/broker/certfile"
	"github.com/meridian-metrics/meridian/broker/edge"
)

// edgeSecurity is the edge's TLS, authentication, origin and proxy
// settings (meridian edge): what needs reading or parsing before it becomes
// edge.Config.
type edgeSecurity struct {
	TLSCert, TLSKey  string
	HMACSecretFile   string
	PublicKeyFiles   cli.StringSlice
	JWKSURL          string
	Audience, Issuer string
	Anonymous        bool
	AllowedOrigins   cli.StringSlice
	TrustedProxies   cli.StringSlice
}

func edgeSecurityFlags(s *edgeSecurity) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate (chain) for https/wss; reloaded when the file changes", Destination: &s.TLSCert},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key for --tls-cert; reloaded when the file changes", Destination: &s.TLSKey},
		&cli.StringFlag{Name: "auth-hmac-secret-file", Usage: "file holding the HS256/384/512 token secret (at least 32 bytes; never a flag value)", Destination: &s.HMACSecretFile},
		&cli.StringSliceFlag{Name: "auth-public-key-file", Usage: "PEM file of RSA/ECDSA/Ed25519 public keys or certificates verifying tokens (repeatable)", Destination: &s.PublicKeyFiles},
		&cli.StringFlag{Name: "auth-jwks-url", Usage: "JWKS URL of token signing keys, refreshed every 5m and on unknown kid", Destination: &s.JWKSURL},
		&cli.StringFlag{Name: "auth-audience", Usage: "required token aud", Destination: &s.Audience},
		&cli.StringFlag{Name: "auth-issuer", Usage: "required token iss", Destination: &s.Issuer},
		&cli.BoolFlag{Name: "anonymous", Usage: "serve clients without tokens (refused by default when no --auth-* is set)", Destination: &s.Anonymous},
		&cli.StringSliceFlag{Name: "allowed-origins", Usage: "browser origins allowed: https://app.example.com, *.example.com; none: same-origin only", Destination: &s.AllowedOrigins},
		&cli.StringSliceFlag{Name: "trusted-proxies", Usage: "reverse proxies (IPs or CIDRs) whose X-Forwarded-For names the client for the per-address limits", Destination: &s.TrustedProxies},
	}
}

// edgeLimitFlags set the edge's admission limits.
func edgeLimitFlags(cfg *edge.Config) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "max-conns", Value: edge.DefaultMaxConns, Usage: "most open sockets on the edge (503 beyond)", Destination: &cfg.MaxConns},
		&cli.IntFlag{Name: "max-conns-per-addr", Value: edge.DefaultMaxConnsPerAddr, Usage: "most open sockets per client IP (429 beyond)", Destination: &cfg.MaxConnsPerAddr},
		&cli.Float64Flag{Name: "upgrades-per-second", Value: edge.DefaultUpgradesPerSecond, Usage: "WebSocket upgrades per second per client IP", Destination: &cfg.UpgradesPerSecond},
		&cli.IntFlag{Name: "upgrade-burst", Value: edge.DefaultUpgradeBurst, Usage: "WebSocket upgrades a client IP may make at once", Destination: &cfg.UpgradeBurst},
		&cli.Float64Flag{Name: "rest-requests-per-second", Value: edge.DefaultRESTRequestsPerSecond, Usage: "REST requests per second per client IP", Destination: &cfg.RESTRequestsPerSecond},
		&cli.IntFlag{Name: "rest-burst", Value: edge.DefaultRESTBurst, Usage: "REST requests a client IP may make at once", Destination: &cfg.RESTBurst},
		&cli.Float64Flag{Name: "lookups-per-second", Value: edge.DefaultLookupsPerSecond, Usage: "JetStream lookups of scopes not seen live, per second per client IP", Destination: &cfg.LookupsPerSecond},
		&cli.IntFlag{Name: "lookup-burst", Value: edge.DefaultLookupBurst, Usage: "scope lookups a client IP may make at once", Destination: &cfg.LookupBurst},
		&cli.IntFlag{Name: "max-handshakes", Value: edge.DefaultMaxHandshakes, Usage: "connections in their handshake at once (503 beyond)", Destination: &cfg.MaxHandshakes},
		&cli.IntFlag{Name: "max-handshakes-per-addr", Value: edge.DefaultMaxHandshakesPerAddr, Usage: "connections of one client IP in their handshake at once (429 beyond)", Destination: &cfg.MaxHandshakesPerAddr},
	}
}

// errNoAuth: meridian edge without a token setting and without --anonymous.
var errNoAuth = errors.New("no client authentication configured: set --auth-hmac-secret-file, --auth-public-key-file or --auth-jwks-url, or --anonymous to serve anyone")

// apply sets c's TLS, origins, trusted proxies and token verifier. The
// verifier, when any, must be closed by the caller.
func (s *edgeSecurity) apply(ctx context.Context, c *edge.Config, log *slog.Logger) (*auth.Verifier, error) {
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return nil, usageError("--tls-cert and --tls-key go together")
	}
	if s.TLSCert != "" {
		r, err := certfile.New(s.TLSCert, s.TLSKey, log)
		if err != nil {
			return nil, usageError("%v", err)
		}
		c.TLS = r.ServerConfig()
	}
	c.AllowedOrigins = s.AllowedOrigins.Value()
	for _, p := range s.TrustedProxies.Value() {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return nil, usageError("--trusted-proxies %q: want an IP address or a CIDR prefix", p)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx.Masked())
	}
	if err := c.Validate(); err != nil {
		return nil, usageError("%v", err)
	}
	ac := auth.Config{JWKSURL: s.JWKSURL, Audience: s.Audience, Issuer: s.Issuer}
	if s.HMACSecretFile != "" {
		secret, err := readSecretFile("auth-hmac-secret-file", s.HMACSecretFile)
		if err != nil {
			return nil, err
		}
		ac.HMACSecret = secret
	}
	for _, f := range s.PublicKeyFiles.Value() {
		keys, err := readPublicKeys(f)
		if err != nil {
			return nil, usageError("--auth-public-key-file %s: %v", f, err)
		}
		ac.PublicKeys = append(ac.PublicKeys, keys...)
	}
	if ac.HMACSecret == nil && ac.PublicKeys == nil && ac.JWKSURL == "" {
		if !s.Anonymous {
			return nil, usageError("%v", errNoAuth)
		}
		log.Warn("serving anonymous clients: every client may read every scope (--anonymous)")
		return nil, nil
	}
	if s.Anonymous {
		return nil, usageError("--anonymous contradicts the --auth-* settings")
	}
	v, err := auth.NewVerifier(ctx, ac)
	if err != nil {
		if ac.JWKSURL != "" && ac.Validate() == nil {
			return nil, fmt.Errorf("start edge: %w", err) // unreachable JWKS: a runtime failure
		}
		return nil, usageError("%v", err)
	}
	c.Auth = v
	return v, nil
}

// readSecretFile reads an HMAC secret file (a trailing newline is not
// part of the secret).
func readSecretFile(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError("--%s: %v", flag, err)
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

func readPublicKeys(file string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return auth.ParsePublicKeysPEM(b)
}

// schemeOf picks the URL scheme for logs.
func schemeOf(c *tls.Config, plain, secure string) string {
	if c != nil {
		return secure
	}
	return plain
}
