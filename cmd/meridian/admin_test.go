package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
)

// TestProcessRegistryLints covers what every role adds to its registry
// beyond its package's own metrics: Go and process collectors, the NATS
// client state and the NATS server's figures.
func TestProcessRegistryLints(t *testing.T) {
	node, nc := natstest.StartTest(t)
	reg := newRegistry()
	registerNATSClient(reg, "meridian", "edge", nc)
	reg.MustRegister(node.Collector("meridian"))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP meridian_nats_client_connected 1 while this process's NATS client connection is up.
# TYPE meridian_nats_client_connected gauge
meridian_nats_client_connected{client="edge"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meridian_nats_client_connected"); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	want = strings.Replace(want, "} 1", "} 0", 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meridian_nats_client_connected"); err != nil {
		t.Fatalf("after close: %v", err)
	}
}

func TestAdminMuxReadiness(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(adminMux(newRegistry(), func() (string, bool) { return "no snapshots yet", ready.Load() }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no snapshots yet") {
		t.Fatalf("not ready: %d %q", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics: %d", code)
	}
}
