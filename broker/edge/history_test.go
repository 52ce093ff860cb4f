//go:build linux

package edge

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestIncludeHistoryFromJetStream(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := history.EnsureStream(ctx, js, history.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	// 20 minutes of history every 2 s, stored before the edge starts.
	now := time.Now().UTC().Truncate(time.Second)
	var all []proto.Snapshot
	for i := range 600 {
		s := snap(now.Add(time.Duration(i-600)*2*time.Second), uint64(100+i*7))
		s.ActiveConnections = int64(i % 13)
		data, _ := s.Encode()
		if _, err := js.Publish(ctx, proto.SnapshotSubject(s.Scope), data); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	te := startEdge(t, Config{NATS: nc})
	wait.For(t, 10*time.Second, "history loaded", te.hist.cluster.loaded.Load)
	live := snap(now, 100+600*7)
	te.publishWait(live)
	all = append(all, live)

	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	// The guide's Python example.
	evs := historyEvents(t, c, `{"metrics":["requests_total","success_rate"],"interval_seconds":1,"include_history":true}`,
		proto.RequestsTotal, proto.SuccessRate)
	for i, m := range []proto.Metric{proto.RequestsTotal, proto.SuccessRate} {
		ev := evs[i]
		want := history.Series(all, m, live.Time.Add(-time.Hour), live.Time, proto.DefaultHistoryPoints)
		if len(ev.DataPoints) != len(want) || len(want) < 100 {
			t.Fatalf("%s: %d points, want %d (over 100)", m, len(ev.DataPoints), len(want))
		}
		for i, p := range ev.DataPoints {
			if !p.Time.Equal(want[i].Time) || math.Abs(p.Value-want[i].Value) > 0.001 {
				t.Fatalf("%s point %d = %+v, want %+v", m, i, p, want[i])
			}
		}
		// 1 h at most 720 points: one per 5 s.
		if step := ev.DataPoints[1].Time.Sub(ev.DataPoints[0].Time); step != 5*time.Second && step != 10*time.Second {
			t.Errorf("%s: resolution %s, want 5s buckets", m, step)
		}
	}
	_, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got := keys(raw); got != allKeys {
		t.Errorf("snapshot after history: fields = %s, want %s", got, allKeys)
	}
	if got := testutil.ToFloat64(te.m.historyLoadErrors); got != 0 {
		t.Errorf("history load errors = %v, want 0", got)
	}
}

// Without JetStream the edge serves live data (history: what arrived live)
// and keeps retrying the backfill.
func TestHistoryWithoutJetStream(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartCore(t)
	te := startEdge(t, Config{NATS: nc})
	te.publishWait(snap(time.Now(), 42))

	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	ev := historyEvents(t, c, `{"metrics":["requests_total"],"include_history":true}`, proto.RequestsTotal)[0]
	if len(ev.DataPoints) != 1 || ev.DataPoints[0].Value != 42 {
		t.Errorf("history without JetStream = %+v, want the one live point", ev.DataPoints)
	}
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	wait.For(t, 10*time.Second, "load retried", func() bool { return testutil.ToFloat64(te.m.historyLoadErrors) >= 2 })
	if te.hist.cluster.loaded.Load() {
		t.Errorf("history reported loaded without JetStream")
	}
	// Without JetStream there is no history to find a scope in: unknown.
	c.sendText(`{"region":"mars"}`)
	for {
		ev, _ := c.event(3 * time.Second)
		if ev.Type == proto.EventError {
			if want := "unknown scope region.mars: no snapshot of it was seen live or is kept in history; known scopes: cluster"; ev.Message != want {
				t.Errorf("error %q, want %q", ev.Message, want)
			}
			break
		}
	}
}

// The guide's client examples, driven the way their libraries behave
// (control frames answered by the library, text messages parsed as JSON).
func TestGuideClientExamples(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	seedHistory(te)
	te.publishWait(snap(time.Now(), 5000))

	read := func(c *client) map[string]any {
		t.Helper()
		_ = c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		data, _, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{c.r, c.conn})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var msg map[string]any
		if err := json.Unmarshal(data, &msg); err != nil {
			t.Fatalf("message %s is not JSON: %v", data, err)
		}
		return msg
	}

	t.Run("javascript", func(t *testing.T) {
		c := dial(t, te.url)
		c.sendText(`{"metrics":["requests_total","active_connections"],"interval_seconds":2,"include_history":false}`)
		first := read(c)
		if first["type"] != "Snapshot" || first["requests_total"] != 5000.0 || first["success_rate"] == nil {
			t.Errorf("first message = %v, want a full Snapshot", first)
		}
		start := time.Now()
		next := read(c)
		if next["type"] != "Snapshot" || next["requests_total"] != 5000.0 || next["active_connections"] == nil {
			t.Errorf("second message = %v", next)
		}
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("second snapshot after %s, want the 2 s cadence", d)
		}
	})
	t.Run("node", func(t *testing.T) {
		c := dial(t, te.url)
		c.sendText(`{"metrics":[],"interval_seconds":5,"include_history":true}`)
		if m := read(c); m["type"] != "Snapshot" {
			t.Fatalf("first message = %v", m)
		}
		for _, metric := range proto.GuideMetrics.Metrics() {
			name := metric.String()
			m := read(c)
			for m["type"] == "Snapshot" {
				m = read(c) // a slow machine may reach the first tick before the subscription
			}
			points, _ := m["data_points"].([]any)
			if m["type"] != "TimeSeries" || m["metric_name"] != name || len(points) != proto.DefaultHistoryPoints {
				t.Fatalf("got %v %v with %d points, want TimeSeries %s with %d", m["type"], m["metric_name"], len(points), name, proto.DefaultHistoryPoints)
			}
		}
		c.expectSilence(time.Second) // next snapshot only at t0+5s
	})
}
