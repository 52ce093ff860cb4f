package integration

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/proto"
)

// TestTotalsEqualWhatTheLoadGeneratorSent drives known traffic through two
// gateways in two regions and checks, over a real WebSocket, that the
// cluster counters equal exactly what the load generator was answered —
// and keep doing so across a graceful gateway restart.
func TestTotalsEqualWhatTheLoadGeneratorSent(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Per-region snapshots straight from NATS, to check the region split too.
	regions := map[string]proto.Snapshot{}
	regionMsgs := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(proto.SnapshotSubjectPrefix+".region.*", regionMsgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	ws := c.dial(ctx)
	first := snapshotWhere(t, ctx, ws, "any", func(proto.Event) bool { return true })
	if first.Values["requests_total"] != 0 {
		t.Fatalf("fresh cluster starts at %v requests", first.Values["requests_total"])
	}

	res1 := runLoad(t, ctx, loadgen.Config{Targets: c.gatewayURLs(), RPS: 400, Requests: 600, ErrorRatio: 0.1})
	ev := waitTotals(t, ctx, ws, res1)
	if got, want := ev.Values["success_rate"], 100*float64(res1.Succeeded)/float64(res1.Sent); math.Abs(got-want) > 0.001 {
		t.Errorf("success_rate = %v, want %v", got, want)
	}
	if ev.Values["avg_response_time"] <= 0 {
		t.Errorf("avg_response_time = %v after traffic; want > 0", ev.Values["avg_response_time"])
	}

	// Each region got half of the round-robin load.
	deadline := time.After(10 * time.Second)
	for regions["eu"].RequestsTotal+regions["us"].RequestsTotal != res1.Sent {
		select {
		case m := <-regionMsgs:
			s, err := proto.DecodeSnapshot(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			regions[s.Scope.Name] = s
		case <-deadline:
			t.Fatalf("region totals %d + %d never reached %d", regions["eu"].RequestsTotal, regions["us"].RequestsTotal, res1.Sent)
		}
	}
	if regions["eu"].RequestsTotal != res1.Sent/2 || regions["us"].RequestsTotal != res1.Sent/2 {
		t.Errorf("regions eu=%d us=%d, want %d each", regions["eu"].RequestsTotal, regions["us"].RequestsTotal, res1.Sent/2)
	}

	// A graceful restart of gw-eu-1 (new boot id, counters from zero) adds
	// to the totals instead of resetting them.
	c.stopGateway("gw-eu-1")
	c.startGateway("eu", "gw-eu-1")
	res2 := runLoad(t, ctx, loadgen.Config{Targets: c.gatewayURLs(), RPS: 400, Requests: 300, ErrorRatio: 0.2})
	waitTotals(t, ctx, ws, loadgen.Result{
		Sent: res1.Sent + res2.Sent, Succeeded: res1.Succeeded + res2.Succeeded, Failed: res1.Failed + res2.Failed,
	})
}

func runLoad(t *testing.T, ctx context.Context, cfg loadgen.Config) loadgen.Result {
	t.Helper()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if res.TransportErrors != 0 || res.Sent != uint64(cfg.Requests) {
		t.Fatalf("load did not complete cleanly: %s", res)
	}
	t.Logf("load: %s", res)
	return res
}

// waitTotals reads snapshots until requests_total reaches res.Sent and then
// requires success and error counts to match exactly; totals must never
// decrease on the way.
func waitTotals(t *testing.T, ctx context.Context, ws interface {
	NextRaw(context.Context) ([]byte, error)
}, res loadgen.Result) proto.Event {
	t.Helper()
	var prev float64
	for {
		data, err := ws.NextRaw(ctx)
		if err != nil {
			t.Fatalf("waiting for requests_total=%d (last %v): %v", res.Sent, prev, err)
		}
		ev, err := proto.DecodeEvent(data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != proto.EventSnapshot {
			continue
		}
		total := ev.Values["requests_total"]
		if total < prev {
			t.Fatalf("requests_total decreased from %v to %v", prev, total)
		}
		prev = total
		if total > float64(res.Sent) {
			raw, _ := json.Marshal(ev.Values)
			t.Fatalf("requests_total %v exceeds the %d requests sent: %s", total, res.Sent, raw)
		}
		if total == float64(res.Sent) {
			if ev.Values["requests_success"] != float64(res.Succeeded) || ev.Values["requests_error"] != float64(res.Failed) {
				t.Fatalf("success/error = %v/%v, load generator got %d 2xx/3xx and %d 4xx/5xx",
					ev.Values["requests_success"], ev.Values["requests_error"], res.Succeeded, res.Failed)
			}
			return ev
		}
	}
}
