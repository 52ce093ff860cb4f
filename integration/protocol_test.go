package integration

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/proto"
)

// snapshotKeys reads the next Snapshot as raw JSON and returns its keys.
func snapshotKeys(t *testing.T, ctx context.Context, ws *wsclient.Client) ([]string, map[string]any) {
	t.Helper()
	for {
		data, err := ws.NextRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("server sent invalid JSON %q: %v", data, err)
		}
		if m["type"] != proto.EventSnapshot {
			continue
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys, m
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// guideKeys are the keys of every Snapshot whatever its subscription names
// (unless strict_metrics): type, timestamp and the guide's six.
func guideKeys() []string {
	keys := []string{"type", "timestamp"}
	for _, m := range proto.GuideMetrics.Metrics() {
		keys = append(keys, m.String())
	}
	return sorted(keys...)
}

func TestProtocolOverThePipeline(t *testing.T) {
	c := startCluster(t, clusterOptions{})

	t.Run("exactly one snapshot on connect, the guide's metrics, RFC 3339 UTC", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		ws := c.dial(ctx)
		keys, m := snapshotKeys(t, ctx, ws)
		if want := guideKeys(); !slices.Equal(keys, want) {
			t.Fatalf("first snapshot keys %v, want %v", keys, want)
		}
		ts, _ := m["timestamp"].(string)
		if _, err := time.Parse(time.RFC3339, ts); err != nil || !strings.HasSuffix(ts, "Z") {
			t.Fatalf("timestamp %q is not RFC 3339 UTC", ts)
		}
		got := time.Now()
		snapshotKeys(t, ctx, ws)
		// The reference implementation sends two snapshots back to back on
		// connect; the second one must come a whole interval later.
		if gap := time.Since(got); gap < 800*time.Millisecond {
			t.Fatalf("second snapshot %v after the first; want one per 1 s interval", gap)
		}
	})

	t.Run("subscription replaces, keeps the guide's fields, accepts the alias, sets the interval; strict_metrics filters", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws := c.dial(ctx)
		snapshotKeys(t, ctx, ws)
		// Verbatim from the guide (Rust example): response_time_avg.
		if err := ws.WriteText(ctx, []byte(`{"metrics":["requests_total","response_time_avg"],"interval_seconds":2,"include_history":false}`)); err != nil {
			t.Fatal(err)
		}
		// The example prints success_rate, which it did not name.
		keys, _ := snapshotKeys(t, ctx, ws)
		if want := guideKeys(); !slices.Equal(keys, want) {
			t.Fatalf("keys %v, want %v", keys, want)
		}
		at := time.Now()
		snapshotKeys(t, ctx, ws)
		if gap := time.Since(at); gap < 1800*time.Millisecond {
			t.Fatalf("snapshots %v apart with interval_seconds 2", gap)
		}
		// strict_metrics: exactly what was named, the alias resolved.
		if err := ws.WriteText(ctx, []byte(`{"metrics":["requests_total","response_time_avg"],"interval_seconds":1,"strict_metrics":true}`)); err != nil {
			t.Fatal(err)
		}
		keys, _ = snapshotKeys(t, ctx, ws)
		if want := sorted("type", "timestamp", "requests_total", "avg_response_time"); !slices.Equal(keys, want) {
			t.Fatalf("strict keys %v, want %v", keys, want)
		}
		// A new subscription replaces the strict one whole: the six again.
		if err := ws.Subscribe(ctx, map[string]any{"metrics": []string{}, "interval_seconds": 1}); err != nil {
			t.Fatal(err)
		}
		keys, _ = snapshotKeys(t, ctx, ws)
		if want := guideKeys(); !slices.Equal(keys, want) {
			t.Fatalf("after metrics [] got keys %v, want %v", keys, want)
		}
	})

	t.Run("bad input gets an Error naming the problem; the subscription stays", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws := c.dial(ctx)
		snapshotKeys(t, ctx, ws)
		// strict_metrics makes the subscription in force visible in each snapshot.
		if err := ws.Subscribe(ctx, map[string]any{"metrics": []string{"requests_error"}, "strict_metrics": true}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			send   string
			binary bool
			want   []string
		}{
			{send: `{"metrics": [`, want: []string{"JSON object"}},
			{send: `{"interval_seconds": 0}`, want: []string{"interval_seconds", "1 to 60"}},
			{send: `{"interval_seconds": 61}`, want: []string{"interval_seconds", "1 to 60"}},
			{send: `{"interval_seconds": "5"}`, want: []string{"interval_seconds", "integer"}},
			{send: `{"metrics": ["requests_total", "latency_p99"]}`, want: []string{`"latency_p99"`, "requests_total", "success_rate"}},
			{send: `{"include_history": 1}`, want: []string{"include_history", "true or false"}},
			{send: `{"metrics": ["requests_total"]}`, binary: true, want: []string{"binary"}},
		}
		for _, tc := range tests {
			var err error
			if tc.binary {
				err = ws.WriteBinary(ctx, []byte(tc.send))
			} else {
				err = ws.WriteText(ctx, []byte(tc.send))
			}
			if err != nil {
				t.Fatal(err)
			}
			ev, err := ws.NextOfType(ctx, proto.EventError)
			if err != nil {
				t.Fatalf("after %q: %v", tc.send, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(ev.Message, w) {
					t.Errorf("error for %q is %q; want it to mention %q", tc.send, ev.Message, w)
				}
			}
		}
		keys, _ := snapshotKeys(t, ctx, ws)
		if want := sorted("type", "timestamp", "requests_error"); !slices.Equal(keys, want) {
			t.Fatalf("after bad input the subscription changed: keys %v, want %v", keys, want)
		}
	})

	t.Run("include_history sends one TimeSeries per subscribed metric, then snapshots", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ws := c.dial(ctx)
		for i := 0; i < 3; i++ { // let a few seconds of history accumulate
			snapshotKeys(t, ctx, ws)
		}
		// The guide's Python example subscription.
		if err := ws.WriteText(ctx, []byte(`{"metrics":["requests_total","success_rate"],"interval_seconds":1,"include_history":true}`)); err != nil {
			t.Fatal(err)
		}
		var series []string
		for len(series) < 2 {
			ev, err := ws.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch ev.Type {
			case proto.EventTimeSeries:
				if len(ev.DataPoints) == 0 {
					t.Errorf("empty %s series although history exists", ev.MetricName)
				}
				series = append(series, ev.MetricName)
			case proto.EventSnapshot:
				if len(series) < 2 {
					t.Logf("snapshot arrived before the history (allowed only if due): %v", ev.Values)
				}
			}
		}
		if slices.Sort(series); !slices.Equal(series, []string{"requests_total", "success_rate"}) {
			t.Fatalf("series %v", series)
		}
		keys, _ := snapshotKeys(t, ctx, ws)
		if want := guideKeys(); !slices.Equal(keys, want) {
			t.Fatalf("live keys after history %v, want %v", keys, want)
		}
	})

	t.Run("oversized message closes with 1009", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws := c.dial(ctx)
		snapshotKeys(t, ctx, ws)
		big := `{"metrics":[],"pad":"` + strings.Repeat("x", edge.DefaultMaxMessageBytes) + `"}`
		if err := ws.WriteText(ctx, []byte(big)); err != nil {
			t.Fatal(err)
		}
		var ce wsclient.ClosedError
		for {
			_, err := ws.NextRaw(ctx)
			if err == nil {
				continue
			}
			if !errors.As(err, &ce) || ce.Code != 1009 {
				t.Fatalf("want close 1009, got %v", err)
			}
			break
		}
		// Other clients are unaffected.
		other := c.dial(ctx)
		snapshotKeys(t, ctx, other)
	})
}

func TestHeartbeatAndGracefulShutdown(t *testing.T) {
	c := startCluster(t, clusterOptions{edge: edge.Config{HeartbeatInterval: 300 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ws := c.dial(ctx)
	hb, err := ws.NextOfType(ctx, proto.EventHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	if hb.Timestamp.IsZero() || time.Since(hb.Timestamp) > 5*time.Second {
		t.Fatalf("heartbeat timestamp %v", hb.Timestamp)
	}

	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		c.edge.Shutdown(sctx)
	}()
	for {
		_, err := ws.NextRaw(ctx)
		if err == nil {
			continue
		}
		var ce wsclient.ClosedError
		if !errors.As(err, &ce) || ce.Code != 1001 {
			t.Fatalf("on shutdown want close 1001, got %v", err)
		}
		return
	}
}
