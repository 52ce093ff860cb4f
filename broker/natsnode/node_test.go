package natsnode_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartConnectShutdown(t *testing.T) {
	node, nc := natstest.StartTest(t)
	if !strings.HasPrefix(node.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("client URL %q", node.ClientURL())
	}
	in, err := node.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	sub, err := in.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription is registered once the server has answered a PING
	// sent after it; before that, a message from another connection may
	// find no interest and be dropped.
	if err := in.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("in-process client got %v, %v", m, err)
	}
	// Idempotent shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := node.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewRequiresStoreDir(t *testing.T) {
	if _, err := natsnode.New(natsnode.Config{Port: -1}); err == nil || !strings.Contains(err.Error(), "StoreDir") {
		t.Fatalf("want a StoreDir error, got %v", err)
	}
	if _, err := natsnode.New(natsnode.Config{Port: -1, StoreDir: t.TempDir(), ClusterName: "c", ClusterPort: -1, Routes: []string{"::bad"}}); err == nil {
		t.Fatal("bad route accepted")
	}
}

func TestStartReportsPortInUse(t *testing.T) {
	node, _ := natstest.StartTest(t)
	port := node.Server().Addr().(*net.TCPAddr).Port
	n2, err := natsnode.New(natsnode.Config{Port: port, StoreDir: t.TempDir(), ReadyTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n2.Start(ctx); err == nil {
		n2.Shutdown(ctx)
		t.Fatal("a second server on the same port started")
	}
}

func TestCollector(t *testing.T) {
	node, nc := natstest.StartTest(t)
	for i := 0; i < 10; i++ {
		if err := nc.Publish("metrics.test", []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(node.Collector("acme"))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP acme_nats_jetstream_enabled 1 when JetStream runs on this server.
# TYPE acme_nats_jetstream_enabled gauge
acme_nats_jetstream_enabled 1
# HELP acme_nats_up 1 while the server is running.
# TYPE acme_nats_up gauge
acme_nats_up 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "acme_nats_up", "acme_nats_jetstream_enabled"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "acme_nats_messages_received_total":
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v < 10 {
				t.Errorf("messages received %v, want >= 10", v)
			}
		case "acme_nats_connections":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v < 1 {
				t.Errorf("connections %v, want >= 1", v)
			}
		}
	}
}

func TestSecureConfigRejectsUnsafeCombinations(t *testing.T) {
	auth := t.TempDir() + "/auth.conf"
	if err := os.WriteFile(auth, []byte(`authorization { users = [ { user: a, password: b } ] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir() + "/empty.conf"
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cfg  natsnode.Config
		want string
	}{
		"routes without TLS": {natsnode.Config{AuthConfig: auth, ClusterName: "c"}, "routes need TLS"},
		"cert without key":   {natsnode.Config{TLSCert: "x.pem"}, "both TLSCert and TLSKey"},
		"mTLS without TLS":   {natsnode.Config{VerifyClients: true}, "VerifyClients"},
		"missing file":       {natsnode.Config{AuthConfig: t.TempDir() + "/none.conf"}, "authorization config"},
		"no users":           {natsnode.Config{AuthConfig: empty}, "defines no user"},
	} {
		tc.cfg.Port, tc.cfg.StoreDir = -1, t.TempDir()
		if _, err := natsnode.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
