package integration

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// truth keeps the exact durations each gateway instance recorded.
type truth struct {
	mu sync.Mutex
	by map[string][]time.Duration // instance → durations
}

func (tr *truth) add(instance string, _ int, d time.Duration) {
	tr.mu.Lock()
	tr.by[instance] = append(tr.by[instance], d)
	tr.mu.Unlock()
}

// count is the number of durations kept.
func (tr *truth) count() uint64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var n uint64
	for _, ds := range tr.by {
		n += uint64(len(ds))
	}
	return n
}

// take returns and forgets the durations recorded so far, per scope:
// "cluster", "region.<r>" (instances are named gw-<region>-N).
func (tr *truth) take() map[string][]time.Duration {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string][]time.Duration{}
	for inst, ds := range tr.by {
		region := strings.Split(inst, "-")[1]
		out["cluster"] = append(out["cluster"], ds...)
		out["region."+region] = append(out["region."+region], ds...)
	}
	tr.by = map[string][]time.Duration{}
	return out
}

func exactMs(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[proto.QuantileRank(q, uint64(len(s)))-1]) / 1e6
}

// withDelays weights targets by repeating them: the load generator goes
// round-robin, so the mix is exact.
func withDelays(base string, mix map[string]int) []string {
	var out []string
	for _, delay := range slices.Sorted(func(yield func(string) bool) {
		for d := range mix {
			if !yield(d) {
				return
			}
		}
	}) {
		for range mix[delay] {
			out = append(out, base+"?delay="+delay)
		}
	}
	return out
}

// TestLatencyPercentilesEndToEnd drives a known mix of latencies (the demo
// upstream's ?delay=) through gateways in two regions and checks the
// streamed p50/p90/p99/max per region (from NATS) and for the cluster (over
// a real WebSocket, subscribed by name) against the exact durations every
// gateway recorded, within the 1 % bound — before and after a gateway
// restart. Each phase runs in a fresh window: the test waits until the
// previous phase's requests left the 20 s window.
func TestLatencyPercentilesEndToEnd(t *testing.T) {
	tr := &truth{by: map[string][]time.Duration{}}
	// A window long enough to hold a whole phase even under -race on a
	// loaded machine, where a phase can take several seconds.
	c := startCluster(t, clusterOptions{onRequest: tr.add, avgWindow: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	regionMsgs := make(chan *nats.Msg, 1024)
	sub, err := c.nc.ChanSubscribe(proto.SnapshotSubjectPrefix+".region.*", regionMsgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	ws := c.dial(ctx)
	names := []string{"requests_total", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"}
	if err := ws.Subscribe(ctx, map[string]any{"metrics": names}); err != nil {
		t.Fatal(err)
	}
	quantiles := map[string]float64{"latency_p50_ms": 0.5, "latency_p90_ms": 0.9, "latency_p99_ms": 0.99, "latency_max_ms": 1}

	var sent uint64
	sentTo := map[string]uint64{} // region → requests sent so far
	phase := func(name string) {
		t.Helper()
		urls := map[string]string{}
		c.mu.Lock()
		for inst, g := range c.gateways {
			urls[strings.Split(inst, "-")[1]] = strings.TrimSuffix(g.url, "/") + "/slow"
		}
		c.mu.Unlock()
		eu := withDelays(urls["eu"], map[string]int{"5ms": 12, "40ms": 6, "150ms": 2})
		us := withDelays(urls["us"], map[string]int{"2ms": 10, "25ms": 8, "200ms": 1, "90ms": 1})
		var wg sync.WaitGroup
		var resEU, resUS loadgen.Result
		wg.Add(2)
		go func() { defer wg.Done(); resEU = runLoad(t, ctx, loadgen.Config{Targets: eu, RPS: 150, Requests: 200}) }()
		go func() { defer wg.Done(); resUS = runLoad(t, ctx, loadgen.Config{Targets: us, RPS: 150, Requests: 200}) }()
		wg.Wait()
		sent += resEU.Sent + resUS.Sent
		sentTo["eu"] += resEU.Sent
		sentTo["us"] += resUS.Sent
		// A gateway records a request just after its response went out.
		wait.For(t, 10*time.Second, "every request recorded", func() bool { return tr.count() == resEU.Sent+resUS.Sent })
		want := tr.take()

		// The cluster over the WebSocket, once every request is reported.
		ev := snapshotWhere(t, ctx, ws, "all requests counted", func(ev proto.Event) bool {
			return ev.Values["requests_total"] == float64(sent)
		})
		for metric, q := range quantiles {
			exact := exactMs(want["cluster"], q)
			got := ev.Values[metric]
			// The wire rounds to 3 decimals: allow that on top of the bound.
			if math.Abs(got-exact) > exact*proto.HistMaxRelativeError+0.0005 {
				t.Errorf("%s: cluster %s = %v ms, exact %v ms", name, metric, got, exact)
			} else {
				t.Logf("%s: cluster %s = %v ms, exact %.4f ms", name, metric, got, exact)
			}
		}

		// Each region from its snapshots on NATS, once its count is complete.
		for _, region := range []string{"eu", "us"} {
			var s proto.Snapshot
			deadline := time.After(15 * time.Second)
			for s.Scope.Name != region || s.RequestsTotal != sentTo[region] {
				select {
				case m := <-regionMsgs:
					if s, err = proto.DecodeSnapshot(m.Data); err != nil {
						t.Fatal(err)
					}
				case <-deadline:
					t.Fatalf("%s: no complete snapshot of region %s", name, region)
				}
			}
			for i, q := range proto.LatencyQuantiles {
				exact := exactMs(want["region."+region], q)
				if rel := math.Abs(s.LatencyMs[i]-exact) / exact; rel > proto.HistMaxRelativeError {
					t.Errorf("%s: region %s q=%v: %v ms, exact %v ms", name, region, q, s.LatencyMs[i], exact)
				}
			}
		}

		// Wait for the window to empty before the next phase.
		snapshotWhere(t, ctx, ws, "the latency window to empty", func(ev proto.Event) bool {
			return ev.Values["latency_p50_ms"] == 0
		})
		for len(regionMsgs) > 0 {
			<-regionMsgs
		}
	}

	phase("first")
	// A graceful restart of gw-eu-1: a new boot whose histogram starts from
	// zero. Its old counts must not come back, its new ones count once.
	c.stopGateway("gw-eu-1")
	c.startGateway("eu", "gw-eu-1")
	tr.take()
	phase("after a gateway restart")
}
