package natsauth_test

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/integration/logbuf"
	"github.com/meridian-metrics/meridian/integration/wait"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startRouted(t *testing.T, name string, cfg natsnode.Config) *natsnode.Node {
	t.Helper()
	cfg.Name, cfg.Port, cfg.ClusterName, cfg.ClusterHost = name, -1, "meridian", "127.0.0.1"
	return startNode(t, cfg)
}

// TestRoutesNeedANodeCertificate: two nodes with the server certificate
// form a cluster over TLS; a third that presents a role's client
// certificate, signed by the same CA, is refused as a route, so it cannot
// bypass user permissions by joining the cluster.
func TestRoutesNeedANodeCertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := natsauth.Generate(natsauth.Spec{Dir: dir, ClientCerts: true, Gateways: []natsauth.Gateway{{Region: "eu"}}}); err != nil {
		t.Fatal(err)
	}
	pa, pb := freePort(t), freePort(t)
	routes := []string{fmt.Sprintf("nats-route://localhost:%d", pa), fmt.Sprintf("nats-route://localhost:%d", pb)}
	secure := func(port int, cert, key string, log *slog.Logger) natsnode.Config {
		return natsnode.Config{
			ClusterPort: port, Routes: routes, Logger: log,
			AuthConfig: filepath.Join(dir, natsauth.AuthConfigFile), TLSCA: filepath.Join(dir, natsauth.CAFile),
			TLSCert: filepath.Join(dir, cert), TLSKey: filepath.Join(dir, key),
		}
	}
	var logA logbuf.Buffer
	a := startRouted(t, "a", secure(pa, natsauth.ServerCertFile, natsauth.ServerKeyFile, slog.New(slog.NewTextHandler(&logA, nil))))
	b := startRouted(t, "b", secure(pb, natsauth.ServerCertFile, natsauth.ServerKeyFile, slog.New(slog.DiscardHandler)))
	wait.For(t, 20*time.Second, "the two real nodes to route", func() bool {
		return a.Server().NumRoutes() > 0 && b.Server().NumRoutes() > 0
	})
	// The rogue: a gateway's client certificate, routing to a.
	rogue := secure(freePort(t), "gateway.eu.pem", "gateway.eu-key.pem", slog.New(slog.DiscardHandler))
	rogue.AuthConfig, rogue.Routes = "", routes[:1]
	r := startRouted(t, "rogue", rogue)
	before := len(logA.String())
	wait.For(t, 30*time.Second, "the node to refuse the rogue route", func() bool {
		return strings.Contains(logA.String()[before:], "authentication error")
	})
	wait.For(t, 20*time.Second, "the rogue to hold no route", func() bool { return r.Server().NumRoutes() == 0 })
}
