//go:build linux

package edge

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// secondly builds n cluster snapshots, one per second, ending at end, with
// requests_total base+i and a varying gauge.
func secondly(scope proto.Scope, end time.Time, n int, base uint64) []proto.Snapshot {
	out := make([]proto.Snapshot, n)
	for i := range out {
		s := scoped(snap(end.Add(time.Duration(i-n+1)*time.Second), base+uint64(i)), scope)
		s.ActiveConnections = int64(i % 17)
		out[i] = s
	}
	return out
}

// minutely builds rollups, one per minute from first (a minute start), n of
// them, with requests_total base+i.
func minutely(scope proto.Scope, first time.Time, n int, base uint64) []proto.Snapshot {
	out := make([]proto.Snapshot, n)
	for i := range out {
		s := scoped(snap(first.Add(time.Duration(i)*time.Minute), base+uint64(i)), scope)
		s.ActiveConnections = int64(100 + i%7)
		out[i] = s
	}
	return out
}

// historyEvents sends sub (unless empty) and collects one TimeSeries per
// metric wanted, in order, skipping snapshots.
func historyEvents(t *testing.T, c *client, sub string, want ...proto.Metric) []proto.Event {
	t.Helper()
	if sub != "" {
		c.sendText(sub)
	}
	var out []proto.Event
	for len(out) < len(want) {
		ev, raw := c.event(5 * time.Second)
		switch ev.Type {
		case proto.EventSnapshot:
			continue
		case proto.EventTimeSeries:
		default:
			t.Fatalf("%s: got %v, want TimeSeries", sub, raw)
		}
		if m := want[len(out)]; ev.MetricName != m.String() {
			t.Fatalf("%s: TimeSeries %s, want %s", sub, ev.MetricName, m)
		}
		out = append(out, ev)
	}
	return out
}

func samePoints(t *testing.T, what string, got, want []proto.Point) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d points, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !got[i].Time.Equal(want[i].Time) || math.Abs(got[i].Value-want[i].Value) > 0.001 {
			t.Fatalf("%s: point %d = %+v, want %+v", what, i, got[i], want[i])
		}
	}
}

// history_seconds beyond the in-memory window is served from the rollups
// for the part before the ring, then from the ring.
func TestIncludeHistoryBeyondWindowReadsRollups(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	end := time.Now().UTC().Truncate(time.Second)
	fine := secondly(proto.ClusterScope(), end, 600, 100_000)
	store(t, js, fine...)
	rolls := minutely(proto.ClusterScope(), end.Truncate(time.Minute).Add(-3*time.Hour), 180, 1000)
	storeRollups(t, js, rolls...)
	te := start(Config{HistoryWindow: 10 * time.Minute, HistoryRequestBurst: 10})
	te.publishWait(fine[len(fine)-1])

	ring, _ := te.hist.cluster.view(time.Time{})
	if len(ring) < 550 || !ring[len(ring)-1].Time.Equal(end) {
		t.Fatalf("ring holds %d snapshots ending %v, want the last 10 minutes", len(ring), ring[len(ring)-1].Time)
	}
	ringFirst := ring[0].Time
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	for _, tt := range []struct {
		seconds, points int
	}{
		{7200, 120},
		{3 * 3600, 1000},
		{600, 720}, // within the window: memory only
	} {
		metrics := []proto.Metric{proto.RequestsTotal, proto.ActiveConnections, proto.AvgResponseTime}
		evs := historyEvents(t, c, fmt.Sprintf(`{"metrics":["requests_total","active_connections","avg_response_time"],"include_history":true,"history_seconds":%d,"history_points":%d}`,
			tt.seconds, tt.points), metrics...)
		from := end.Add(-time.Duration(tt.seconds) * time.Second)
		var data []proto.Snapshot
		if tt.seconds > 600 {
			for _, r := range rolls {
				if !r.Time.Before(from.Add(-time.Minute)) && !r.Time.Add(time.Minute).After(ringFirst) {
					data = append(data, r)
				}
			}
		}
		nRolls := len(data)
		for _, s := range ring {
			if !s.Time.Before(from) {
				data = append(data, s)
			}
		}
		for i, m := range metrics {
			want := history.Series(data, m, from, end, tt.points)
			what := fmt.Sprintf("%s over %ds in %d points", m, tt.seconds, tt.points)
			samePoints(t, what, evs[i].DataPoints, want)
			if len(want) > tt.points || len(want) == 0 {
				t.Fatalf("%s: %d points", what, len(want))
			}
			older := 0
			for _, p := range evs[i].DataPoints {
				if p.Time.Before(ringFirst.Add(-time.Minute)) {
					older++
				}
			}
			if tt.seconds > 600 && (nRolls < 100 || older < 100) {
				t.Errorf("%s: %d rollups, %d points before the ring: rollups not read", what, nRolls, older)
			}
			if tt.seconds <= 600 && older > 0 {
				t.Errorf("%s: %d points before the ring for a span within the window", what, older)
			}
		}
	}
	if got := testutil.ToFloat64(te.m.historyServed); got != 3 {
		t.Errorf("history_requests{served} = %v, want 3", got)
	}
}

func TestHistoryPointsHonoured(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	end := time.Now().UTC().Truncate(time.Second)
	fine := secondly(proto.ClusterScope(), end, 3600, 1)
	store(t, js, fine...)
	te := start(Config{HistoryPoints: 1000, HistoryRequestBurst: 10})
	te.publishWait(fine[len(fine)-1])
	wait.For(t, 10*time.Second, "ring full", func() bool { s, _ := te.hist.cluster.view(time.Time{}); return len(s) >= 3590 })
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	tests := []struct {
		seconds, points int
		want            [2]int // the count lies in [want[0], want[1]]: buckets align to the epoch
	}{
		{3600, 10, [2]int{10, 10}},
		{600, 100, [2]int{100, 100}},
		{3600, 720, [2]int{720, 720}},
		{60, 7, [2]int{7, 7}},
		{3600, 5000, [2]int{900, 901}}, // capped by Config.HistoryPoints: 4 s steps
		{300, 1000, [2]int{301, 301}},  // one per second, both ends included, is all there is
	}
	for _, tt := range tests {
		ev := historyEvents(t, c, fmt.Sprintf(`{"metrics":["requests_total"],"include_history":true,"history_seconds":%d,"history_points":%d}`,
			tt.seconds, tt.points), proto.RequestsTotal)[0]
		pts := ev.DataPoints
		if len(pts) < tt.want[0] || len(pts) > tt.want[1] {
			t.Errorf("%d s in %d points: got %d points, want %v", tt.seconds, tt.points, len(pts), tt.want)
			continue
		}
		step := history.StepFor(time.Duration(tt.seconds)*time.Second, min(tt.points, 1000))
		for i := 1; i < len(pts); i++ {
			if d := pts[i].Time.Sub(pts[i-1].Time); d != step {
				t.Fatalf("%d s in %d points: points %d apart, want %s", tt.seconds, tt.points, d, step)
			}
		}
		if last := pts[len(pts)-1]; last.Value != 3600 {
			t.Errorf("%d s: last point %+v, want the newest counter 3600", tt.seconds, last)
		}
	}
}

// Every subscribed metric gets a TimeSeries, and a scope with data never
// gets an empty one: the window ends at the scope's newest snapshot, and
// what memory lacks comes from the rollups.
func TestNoEmptySeriesForMetricsWithData(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	now := time.Now().UTC().Truncate(time.Second)
	old := proto.InstanceScope("gw-old")
	ancient := proto.InstanceScope("gw-ancient")
	store(t, js, secondly(old, now.Add(-2*time.Hour), 300, 50)...)
	storeRollups(t, js, minutely(ancient, now.Add(-72*time.Hour).Truncate(time.Minute), 30, 7)...)
	te := start(Config{HistoryRequestBurst: 100})
	te.publishWait(snap(now, 1000))

	all := []proto.Metric{proto.RequestsTotal, proto.RequestsSuccess, proto.RequestsError, proto.ActiveConnections, proto.AvgResponseTime, proto.SuccessRate}
	tests := []struct {
		field string
		total float64 // requests_total of the scope's newest snapshot
	}{
		{`"region":null`, 1000},
		{`"instance":"gw-old"`, 50 + 299},
		{`"instance":"gw-ancient"`, 7 + 29},
	}
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	for _, tt := range tests {
		for _, seconds := range []int{1, 60, 3600, 7 * 86400} {
			sub := fmt.Sprintf(`{%s,"metrics":[],"include_history":true,"history_seconds":%d}`, tt.field, seconds)
			evs := historyEvents(t, c, sub, all...)
			for i, ev := range evs {
				if len(ev.DataPoints) == 0 {
					t.Errorf("%s: empty %s series", sub, all[i])
				}
			}
			if got := evs[0].DataPoints[len(evs[0].DataPoints)-1].Value; got != tt.total {
				t.Errorf("%s: newest requests_total point %v, want %v", sub, got, tt.total)
			}
		}
	}
}

func TestHistoryRateLimit(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{HistoryRequestInterval: time.Second, HistoryRequestBurst: 2})
	seedHistory(te)
	te.publishWait(snap(time.Now(), 5))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	historyEvents(t, c, `{"metrics":["requests_total"],"include_history":true}`, proto.RequestsTotal)
	historyEvents(t, c, `{"metrics":["requests_error"],"include_history":true}`, proto.RequestsError)
	sent := time.Now()
	c.sendText(`{"metrics":["success_rate"],"include_history":true,"strict_metrics":true}`)
	var msg string
	for msg == "" {
		ev, raw := c.event(3 * time.Second)
		switch ev.Type {
		case proto.EventError:
			msg = ev.Message
		case proto.EventSnapshot:
		default:
			t.Fatalf("got %v, want the rate-limit Error", raw)
		}
	}
	const prefix = "history request rate limited: a connection may make 60 history requests (include_history or since) per minute, 2 at once; retry after "
	if !strings.HasPrefix(msg, prefix) || !strings.HasSuffix(msg, "; the subscription was applied without its history") {
		t.Fatalf("error %q", msg)
	}
	retry, err := time.Parse(time.RFC3339, strings.Fields(strings.TrimPrefix(msg, prefix))[0])
	if err != nil || retry.Before(sent) || retry.After(sent.Add(2*time.Second)) {
		t.Fatalf("retry time %v (%v) in %q, want within 2s", retry, err, msg)
	}
	// The subscription applied: success_rate only.
	_, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got := keys(raw); got != "type,timestamp,success_rate" {
		t.Errorf("after the refused history: fields %s, want success_rate only", got)
	}
	// The bucket refills: at the advertised time a request is served.
	time.Sleep(time.Until(retry))
	historyEvents(t, c, `{"metrics":["success_rate"],"include_history":true}`, proto.SuccessRate)
	if got := testutil.ToFloat64(te.m.historyRateLimited); got != 1 {
		t.Errorf("history_requests{rate_limited} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(te.m.historyServed); got != 3 {
		t.Errorf("history_requests{served} = %v, want 3", got)
	}
}

// Messages behind a history request take effect in the order they came,
// and so do the Errors for invalid ones.
func TestQueuedMessagesKeepOrder(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	seedHistory(te)
	te.publishWait(snap(time.Now(), 5))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	var burst []byte
	for _, m := range []string{
		`{"metrics":["requests_total"],"include_history":true}`,
		`{"metrics":["requests_error"],"interval_seconds":1,"strict_metrics":true}`,
		`{"interval_seconds":0}`,
	} {
		burst = append(burst, rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true}, []byte(m))...)
	}
	burst = append(burst, rawFrame(ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true}, []byte("x"))...)
	c.sendRaw(burst) // one write: parsed in one read, queued behind the first
	var order []string
	for len(order) < 4 {
		ev, raw := c.event(3 * time.Second)
		switch ev.Type {
		case proto.EventSnapshot:
			if len(order) == 3 {
				order = append(order, keys(raw))
			}
			continue
		case proto.EventTimeSeries:
			order = append(order, ev.MetricName)
		case proto.EventError:
			order = append(order, strings.Fields(ev.Message)[0])
		}
	}
	want := "invalid|binary|type,timestamp,requests_error"
	if got := strings.Join(order[1:], "|"); order[0] != "requests_total" || got != want {
		t.Errorf("events %q, want TimeSeries, Error, Error, then snapshots of the second subscription", order)
	}
}

// The bound on queued messages, exercised without workers so that nothing
// leaves the queue.
func TestQueuedMessagesBounded(t *testing.T) {
	e := bareEdge(t)
	s := newShard(e)
	conns, drain := tcpConns(t, e, s, 1)
	c := conns[0]
	hist := proto.DefaultSubscription()
	hist.IncludeHistory = true
	c.subscribe(hist) // waits for a worker
	for range maxQueuedJobs {
		c.subscribe(proto.DefaultSubscription())
	}
	drain()
	c.mu.Lock()
	queued, pins := len(c.work.jobs), e.scopes.cluster.pins.Load()
	c.mu.Unlock()
	if queued != maxQueuedJobs || pins != 1+maxQueuedJobs {
		t.Fatalf("%d jobs queued, %d pins; want %d and %d", queued, pins, maxQueuedJobs, 1+maxQueuedJobs)
	}
	if got := testutil.ToFloat64(e.m.errorsByType[errTypeBusy]); got != 1 {
		t.Errorf("errors{busy} = %v, want 1", got)
	}
	c.close(reasonClientClose)
	if pins := e.scopes.cluster.pins.Load(); pins != 0 {
		t.Errorf("%d pins after close, want 0", pins)
	}
}
