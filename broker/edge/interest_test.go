package edge

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// startAggregator runs a real aggregator (leading, instance snapshots on
// demand) on nc until the test ends.
func startAggregator(t *testing.T, nc *nats.Conn) {
	t.Helper()
	a, err := aggregator.New(aggregator.Config{NATS: nc, Logger: testLogger(t), LeaderDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shut down aggregator: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("aggregator: %v", err)
		}
	})
}

func publishGatewayReport(t *testing.T, nc *nats.Conn, inst string, seq, total uint64) {
	t.Helper()
	r := proto.Report{
		Version: proto.ReportVersion, Instance: inst, Region: "eu", BootID: "b", Seq: seq,
		Time: time.Now(), StartTime: time.Now().Add(-time.Minute), Interval: time.Second,
		Counters: proto.Counters{RequestsTotal: total, RequestsSuccess: total, LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
	}
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(proto.ReportSubject("eu", inst), data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestInstanceFollowedOnDemand runs a real aggregator, which publishes no
// instance snapshots until an edge announces interest: a client naming an
// instance that never had a snapshot published gets it live within the
// probe, and keeps getting it every second; an instance that does not exist
// is still refused with 404.
func TestInstanceFollowedOnDemand(t *testing.T) {
	t.Parallel()
	_, start := startJS(t)
	te := start(Config{})
	startAggregator(t, te.nc)
	// Its first snapshot says it is subscribed to the reports.
	wait.For(t, 10*time.Second, "the aggregator's first snapshot", func() bool {
		return te.scopes.get(proto.ClusterScope()).latest.Load() != nil
	})
	publishGatewayReport(t, te.nc, "gw-a", 1, 42)
	wait.For(t, 10*time.Second, "the cluster snapshot with the report", func() bool {
		sf := te.scopes.get(proto.ClusterScope()).latest.Load()
		return sf != nil && sf.snap.RequestsTotal == 42
	})
	if st := te.scopes.get(proto.InstanceScope("gw-a")); st != nil {
		t.Fatalf("instance snapshot published before anyone followed it: %+v", st.latest.Load())
	}

	c := dial(t, te.url+"?instance=gw-a")
	ev := c.nextSnapshot(5 * time.Second)
	if ev.Values["requests_total"] != 42 {
		t.Fatalf("first snapshot of gw-a: %v", ev.Values)
	}
	publishGatewayReport(t, te.nc, "gw-a", 2, 50)
	deadline := time.Now().Add(10 * time.Second)
	for ev.Values["requests_total"] != 50 {
		if time.Now().After(deadline) {
			t.Fatalf("gw-a's live snapshots did not follow its report: %v", ev.Values)
		}
		ev = c.nextSnapshot(3 * time.Second)
	}

	raw := rawDial(t, te.Addr().String())
	raw.sendRaw([]byte(upgradeRequest("/ws/metrics?instance=gw-none")))
	raw.readHTTPResponse(http.StatusNotFound)
}
