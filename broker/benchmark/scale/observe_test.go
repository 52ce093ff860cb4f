package scale

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

// TestObserverFlagsContractViolations publishes snapshots through a real NATS
// server: a repeated second and totals going backwards are both reported,
// and delays are kept for the window's seconds only.
func TestObserverFlagsContractViolations(t *testing.T) {
	_, nc := natstest.StartTest(t)
	obs := newObserver()
	subs, err := obs.subscribe(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	base := time.Now().Truncate(time.Second).Add(-10 * time.Second).UTC()
	obs.setWindow(base.Unix(), base.Unix()+2, LatencyWant{})
	send := func(scope proto.Scope, sec int, total uint64) {
		s := proto.Snapshot{Version: proto.SnapshotVersion, Scope: scope, Time: base.Add(time.Duration(sec) * time.Second),
			RequestsTotal: total, RequestsSuccess: total, SuccessRate: 100}
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(proto.SnapshotSubject(scope), data); err != nil {
			t.Fatal(err)
		}
	}
	eu := proto.RegionScope("eu")
	send(proto.ClusterScope(), 0, 10)
	send(eu, 0, 5)
	send(proto.ClusterScope(), 1, 12)
	send(proto.ClusterScope(), 1, 12) // repeated second
	send(eu, 1, 4)                    // backwards
	send(proto.ClusterScope(), 2, 13) // outside the window
	if err := nc.Publish(proto.SnapshotSubject(eu), []byte("{")); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t.Context(), 10*time.Second, func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return obs.bad == 1
	}); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	faults := strings.Join(obs.faults, "\n")
	if len(obs.faults) != 2 || !strings.Contains(faults, "cluster: second") || !strings.Contains(faults, "region.eu: totals went backwards") {
		t.Fatalf("faults:\n%s", faults)
	}
	if len(obs.delays["cluster"]) != 3 || len(obs.delays["region"]) != 2 {
		t.Fatalf("delays kept: cluster %d region %d, want 3 and 2", len(obs.delays["cluster"]), len(obs.delays["region"]))
	}
	if len(obs.arrived["cluster"]) != 4 || len(obs.arrived["region.eu"]) != 2 {
		t.Fatalf("arrivals: %d cluster, %d region.eu; want 4 and 2", len(obs.arrived["cluster"]), len(obs.arrived["region.eu"]))
	}
}
