package natsnode

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/nats-io/nats-server/v2/server"
)

// tlsHandshakeTimeout bounds a client's or route's TLS handshake, in
// seconds (the server's unit). The server's default of half a second is
// tight on a loaded host.
const tlsHandshakeTimeout = 5

// ErrRoutesUnprotected is returned by New for a cluster with an
// authorization config but no TLS: route connections are not subject to
// user permissions, so anyone reaching the route port could publish
// anything. Routes are authenticated by TLS certificates.
var ErrRoutesUnprotected = errors.New("cluster routes need TLS (TLSCert, TLSKey, TLSCA) when an authorization config is set: routes bypass user permissions")

// Secured reports whether clients must authenticate.
func (c Config) Secured() bool { return c.AuthConfig != "" }

// IsLoopback reports whether host names only loopback addresses.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateSecurity rejects TLS and authorization settings that cannot work
// or would leave a hole; Validate calls it.
func (c Config) validateSecurity() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("TLS needs both TLSCert and TLSKey")
	case c.VerifyClients && (c.TLSCert == "" || c.TLSCA == ""):
		return errors.New("VerifyClients needs TLSCert, TLSKey and TLSCA")
	case c.ClusterName != "" && c.AuthConfig != "" && c.TLSCert == "":
		return ErrRoutesUnprotected
	case c.ClusterName != "" && c.TLSCert != "" && c.TLSCA == "":
		return errors.New("cluster TLS needs TLSCA to verify the route peers")
	}
	return nil
}

// secure applies the authorization config and TLS settings to opts; cfg
// passed Validate.
func secure(opts *server.Options, cfg *Config) error {
	if cfg.AuthConfig != "" {
		fo, err := server.ProcessConfigFile(cfg.AuthConfig)
		if err != nil {
			return fmt.Errorf("load authorization config: %w", err)
		}
		if len(fo.Users) == 0 && len(fo.Nkeys) == 0 && fo.Username == "" && fo.Authorization == "" {
			return fmt.Errorf("load authorization config %s: it defines no user, nkey or token", cfg.AuthConfig)
		}
		opts.Users, opts.Nkeys = fo.Users, fo.Nkeys
		opts.Username, opts.Password, opts.Authorization = fo.Username, fo.Password, fo.Authorization
		opts.NoAuthUser = fo.NoAuthUser
		if fo.AuthTimeout > 0 {
			opts.AuthTimeout = fo.AuthTimeout
		}
	}
	if cfg.TLSCert == "" {
		return nil
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: cfg.VerifyClients,
	})
	if err != nil {
		return fmt.Errorf("client TLS: %w", err)
	}
	opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.VerifyClients, tlsHandshakeTimeout
	if cfg.ClusterName == "" {
		return nil
	}
	// Routes verify each other's certificate against the CA, and accept a
	// peer only if its certificate names a host of the route URLs: a
	// client certificate from the same CA (a gateway's) cannot open a route.
	rc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: true,
	})
	if err != nil {
		return fmt.Errorf("route TLS: %w", err)
	}
	// A route is both a TLS server and, when it dials, a TLS client: the CA
	// verifies either way, and peers must present a certificate (as NATS'
	// own config parsing does for cluster TLS).
	rc.ClientAuth, rc.RootCAs = tls.RequireAndVerifyClientCert, rc.ClientCAs
	opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = rc, tlsHandshakeTimeout
	opts.Cluster.TLSCheckKnownURLs = true
	return nil
}

// ReloadSecurity re-reads the authorization config and the TLS certificate,
// key and CA files and applies them to the running server, so that keys and
// certificates rotate without a restart (`meridian nats` does it on
// SIGHUP). Connections whose credentials are no longer listed are closed by
// the server; everything else stays as it was.
func (n *Node) ReloadSecurity() error {
	opts, err := buildOptions(&n.cfg)
	if err != nil {
		return fmt.Errorf("reload nats security: %w", err)
	}
	// A port chosen at start (-1) stays the one bound.
	if tcp, ok := n.ns.Addr().(*net.TCPAddr); ok {
		opts.Port = tcp.Port
	}
	if ca := n.ns.ClusterAddr(); ca != nil {
		opts.Cluster.Port = ca.Port
	}
	if err := n.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload nats security: %w", err)
	}
	return nil
}
