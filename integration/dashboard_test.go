package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/broker/dashboard"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/integration/browser"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// dashCluster is a cluster whose edge serves the dashboard and the history
// API on its port, as `meridian edge` and `meridian dev` do, under demo load.
type dashCluster struct {
	*cluster
	mux *http.ServeMux
}

func startDashCluster(t *testing.T) *dashCluster {
	return startDashClusterWith(t, edge.Config{})
}

// startDashClusterWith starts it with ecfg's settings (Auth, say).
func startDashClusterWith(t *testing.T, ecfg edge.Config) *dashCluster {
	t.Helper()
	// The mux is filled once NATS runs; ServeMux registration is safe
	// while it serves.
	mux := http.NewServeMux()
	ecfg.HTTP, ecfg.PublicHTTP = mux, dashboard.Patterns
	c := startCluster(t, clusterOptions{edge: ecfg})
	js, err := jetstream.New(c.nc)
	if err != nil {
		t.Fatal(err)
	}
	api, err := history.NewAPI(history.APIConfig{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("GET /api/metrics/", api)
	dashboard.New().Mount(mux)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := loadgen.Run(ctx, loadgen.Config{Targets: c.gatewayURLs(), RPS: 40, Continuous: true, ErrorRatio: 0.15})
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("demo load: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &dashCluster{cluster: c, mux: mux}
}

// restartEdge shuts the edge down (clients get 1001) and, once ready(),
// starts a new one on the same address with a new NATS connection.
func (c *dashCluster) restartEdge(ready func()) {
	c.t.Helper()
	addr := c.edge.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.edge.Shutdown(ctx); err != nil {
		c.t.Fatal(err)
	}
	ready()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatalf("listen again on %s: %v", addr, err)
	}
	e, err := edge.New(edge.Config{Listener: ln, NATS: connect(c.t, c.node), Logger: quietLogger(), HTTP: c.mux})
	if err != nil {
		c.t.Fatal(err)
	}
	c.edge = e
	runUntilCleanup(c.t, "restarted edge", e.Run, e.Shutdown)
}

// snapLog records every Snapshot a WebSocket client reads, by timestamp.
type snapLog struct {
	mu     sync.Mutex
	cond   *sync.Cond
	byTime map[time.Time]map[string]float64
	first  time.Time
	last   time.Time
	err    error
}

// recordSnapshots dials url and records its snapshots until the test ends.
func recordSnapshots(t *testing.T, url string) *snapLog {
	t.Helper()
	// A region's scope is known once its first snapshot reached the edge,
	// which may trail the cluster's: until then the URL gets a 404.
	var ws *wsclient.Client
	var err error
	wait.For(t, 15*time.Second, "a WebSocket to "+url, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, err = wsclient.Dial(ctx, url)
		return err == nil
	})
	// Name every metric, as the page does when the edge lists them, so the
	// client reads the Meridian extras too; the scope stays the URL's.
	sub := map[string]any{"metrics": proto.MetricNames(), "interval_seconds": 1}
	if u, err := neturl.Parse(url); err == nil {
		for _, k := range []string{"region", "instance"} {
			if v := u.Query().Get(k); v != "" {
				sub[k] = v
			}
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := ws.Subscribe(sctx, sub); err != nil {
		t.Fatalf("subscribe %s: %v", url, err)
	}
	l := &snapLog{byTime: map[time.Time]map[string]float64{}}
	l.cond = sync.NewCond(&l.mu)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := ws.NextOfType(context.Background(), proto.EventSnapshot)
			l.mu.Lock()
			if err != nil {
				l.err = err
				l.cond.Broadcast()
				l.mu.Unlock()
				return
			}
			l.byTime[ev.Timestamp], l.last = ev.Values, ev.Timestamp
			if l.first.IsZero() {
				l.first = ev.Timestamp
			}
			l.cond.Broadcast()
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ws.Close(); <-done })
	return l
}

// at waits until the client has read past ts and returns the snapshot of
// ts, if the client read one.
func (l *snapLog) at(t *testing.T, ts time.Time) (map[string]float64, bool) {
	t.Helper()
	timer := time.AfterFunc(20*time.Second, func() {
		l.mu.Lock()
		l.err = fmt.Errorf("no snapshot at or after %s within 20s", ts)
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.last.Before(ts) && l.err == nil {
		l.cond.Wait()
	}
	if l.last.Before(ts) {
		t.Fatalf("WebSocket client: %v", l.err)
	}
	v, ok := l.byTime[ts]
	return v, ok
}

// firstTime waits for the client's first snapshot and returns its time.
func (l *snapLog) firstTime(t *testing.T) time.Time {
	t.Helper()
	l.at(t, time.Unix(1, 0))
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// count is how many snapshots the client has read.
func (l *snapLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byTime)
}

// dashState is what window.meridianDashboard.state() returns.
type dashState struct {
	Status        string
	Scope         string
	StepMs        int64
	Metrics       []string
	LastTimestamp string
	HistoryPoints map[string]int
	Series        map[string]struct{ T, V []float64 }
}

func readState(t *testing.T, p *browser.Page) dashState {
	t.Helper()
	s, err := browser.Eval[dashState](p, `window.meridianDashboard.state()`)
	if err != nil {
		t.Fatalf("read dashboard state: %v", err)
	}
	return s
}

type tileReading struct {
	Timestamp string
	Values    map[string]string // data-value, as the page holds it
	Text      map[string]string // what a person sees
}

func readTiles(t *testing.T, p *browser.Page) tileReading {
	t.Helper()
	r, err := browser.Eval[tileReading](p, `(() => {
		const box = document.getElementById('tiles'), r = {timestamp: box.dataset.timestamp || '', values: {}, text: {}};
		for (const el of box.querySelectorAll('.tile')) {
			r.values[el.dataset.metric] = el.dataset.value;
			r.text[el.dataset.metric] = el.querySelector('.value').textContent;
		}
		return r;
	})()`)
	if err != nil {
		t.Fatalf("read tiles: %v", err)
	}
	return r
}

// checkTiles compares the tiles with what log's client read at the same tick.
func checkTiles(t *testing.T, p *browser.Page, log *snapLog, scope string) {
	t.Helper()
	if err := p.WaitJS(30*time.Second, fmt.Sprintf(`(s => s.status === 'live' && s.scope === %q)(window.meridianDashboard.state()) && document.querySelectorAll('#tiles .tile').length >= 6 && Date.parse(document.getElementById('tiles').dataset.timestamp) >= %d`,
		scope, log.firstTime(t).UnixMilli())); err != nil {
		t.Fatal(err)
	}
	tiles := readTiles(t, p)
	ts, err := time.Parse(time.RFC3339, tiles.Timestamp)
	if err != nil {
		t.Fatalf("tiles timestamp %q: %v", tiles.Timestamp, err)
	}
	want, ok := log.at(t, ts)
	if !ok {
		t.Fatalf("the page shows a snapshot of %s that the WebSocket client never read", ts)
	}
	for _, m := range proto.MetricNames() {
		wantV, read := want[m]
		if mm, _ := proto.ParseMetric(m); !proto.GuideMetrics.Has(mm) && (!read || tiles.Values[m] == "") {
			// A Meridian extra is in a Snapshot only once the subscription
			// naming it took effect: the first one after a (re)connect
			// carries the guide's six alone, on the page or in this client.
			continue
		}
		got, err := strconv.ParseFloat(tiles.Values[m], 64)
		if err != nil || got != wantV {
			t.Errorf("%s tile %s at %s = %q, WebSocket client read %v", scope, m, ts.Format(time.TimeOnly), tiles.Values[m], want[m])
		}
	}
	if got, want := tiles.Text["requests_total"], commas(uint64(want["requests_total"])); got != want {
		t.Errorf("requests_total tile reads %q, want %q", got, want)
	}
	t.Logf("%s tiles at %s equal the WebSocket client's snapshot (requests_total %v)", scope, ts.Format(time.TimeOnly), want["requests_total"])
}

func commas(n uint64) string {
	s := strconv.FormatUint(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// maxGap is the largest step between consecutive points of a series.
func maxGap(ts []float64) time.Duration {
	var g float64
	for i := 1; i < len(ts); i++ {
		g = math.Max(g, ts[i]-ts[i-1])
	}
	return time.Duration(g) * time.Millisecond
}

// openDashboard opens the page in a fresh Chromium and fails the test at
// the end if the page ever logged an error or threw. expected lists what
// Chromium itself reports for a refusal the test causes on purpose (a
// connection refused while the edge is down, a 401): the page logs nothing
// of its own.
func openDashboard(t *testing.T, url string, expected ...string) *browser.Page {
	t.Helper()
	p := newWatchedPage(t, browser.Start(t, browser.Options{Width: 1280, Height: 1000}), expected...)
	p.Navigate(url)
	return p
}

// newWatchedPage opens a tab whose console errors fail t at its end.
func newWatchedPage(t *testing.T, b *browser.Browser, expected ...string) *browser.Page {
	t.Helper()
	p := b.NewPage()
	t.Cleanup(func() {
		for _, e := range p.Errors() {
			if !slices.ContainsFunc(expected, func(x string) bool { return strings.Contains(e, x) }) {
				t.Errorf("console error or uncaught exception: %s", e)
			}
		}
	})
	return p
}

func TestDashboardEndToEnd(t *testing.T) {
	c := startDashCluster(t)
	cluster := recordSnapshots(t, c.wsURL)
	eu := recordSnapshots(t, c.wsURL+"?region=eu")
	// Let a few seconds of history accumulate, so the page has some to load.
	wait.For(t, 30*time.Second, "8 cluster snapshots", func() bool { return cluster.count() >= 8 })

	p := openDashboard(t, c.httpURL+"/", "net::ERR_CONNECTION_REFUSED")

	t.Run("tiles equal a WebSocket client's snapshot", func(t *testing.T) {
		checkTiles(t, p, cluster, "cluster")
	})

	t.Run("chart has history and grows live", func(t *testing.T) {
		s := readState(t, p)
		if s.HistoryPoints["requests_total"] < 3 || s.StepMs != 2000 {
			t.Fatalf("history points %v, step %d ms: want ≥ 3 points of requests_total at the 15 min range's 2 s step", s.HistoryPoints, s.StepMs)
		}
		n0, last0 := len(s.Series["requests_total"].T), s.Series["requests_total"].T[len(s.Series["requests_total"].T)-1]
		if err := p.WaitJS(30*time.Second, fmt.Sprintf(`(s => s.series.requests_total.t.length >= %d && s.series.requests_total.t.at(-1) >= %v)(window.meridianDashboard.state())`, n0+2, last0+4000)); err != nil {
			t.Fatal(err)
		}
		pts, err := browser.Eval[string](p, `document.getElementById('chart-rate').dataset.points`)
		if err != nil || pts == "" || pts == "0" {
			t.Fatalf("the rate chart was given %q points (%v)", pts, err)
		}
		t.Logf("requests_total: %d history points, grew from %d to ≥ %d points live; rate chart holds %s points", s.HistoryPoints["requests_total"], n0, n0+2, pts)
	})

	t.Run("per-region table matches region snapshots", func(t *testing.T) {
		if err := p.WaitJS(30*time.Second, `(r => r && r.dataset.rate !== undefined && r.dataset.t0 !== r.dataset.t1)(document.querySelector('#regions tr[data-region="eu"]')) && document.querySelector('#regions tr[data-region="us"]')`); err != nil {
			t.Fatal(err)
		}
		row, err := browser.Eval[map[string]string](p, `Object.assign({}, document.querySelector('#regions tr[data-region="eu"]').dataset)`)
		if err != nil {
			t.Fatal(err)
		}
		t0, err0 := time.Parse(time.RFC3339, row["t0"])
		t1, err1 := time.Parse(time.RFC3339, row["t1"])
		if err0 != nil || err1 != nil {
			t.Fatalf("row times %q %q", row["t0"], row["t1"])
		}
		a, okA := eu.at(t, t0)
		b, okB := eu.at(t, t1)
		if !okA || !okB {
			t.Fatalf("the eu client, connected before the page, did not read the snapshots of %s and %s", t0, t1)
		}
		wantRate := (b["requests_total"] - a["requests_total"]) / t1.Sub(t0).Seconds()
		wantRatio := (b["requests_error"] - a["requests_error"]) / (b["requests_total"] - a["requests_total"])
		gotRate, _ := strconv.ParseFloat(row["rate"], 64)
		gotRatio, _ := strconv.ParseFloat(row["errorRatio"], 64)
		if math.Abs(gotRate-wantRate) > 1e-9 || math.Abs(gotRatio-wantRatio) > 1e-9 || row["instances"] != "1" {
			t.Fatalf("eu row %v; region snapshots give %.4f req/s, error ratio %.4f and one live instance", row, wantRate, wantRatio)
		}
		t.Logf("eu row: %.2f req/s, error ratio %.3f over %s–%s, 1 instance: as the region's snapshots say", gotRate, gotRatio, t0.Format(time.TimeOnly), t1.Format(time.TimeOnly))
	})

	t.Run("scope switch", func(t *testing.T) {
		// Instances join the picker with their first one-minute rollup (their
		// 1 s snapshots exist only while followed): too late for this test.
		if err := p.WaitJS(30*time.Second, `(o => ['cluster', 'region.eu', 'region.us'].every(s => o.includes(s)))([...document.getElementById('scope').options].map(o => o.value))`); err != nil {
			t.Fatalf("the scope picker lacks the cluster or a region: %v", err)
		}
		if _, err := browser.Eval[bool](p, `(s => { s.value = 'region.eu'; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('scope'))`); err != nil {
			t.Fatal(err)
		}
		checkTiles(t, p, eu, "region.eu")
		if err := p.WaitJS(30*time.Second, `(s => s.historyPoints.requests_total >= 3 && location.hash.includes('scope=region.eu'))(window.meridianDashboard.state())`); err != nil {
			t.Fatal(err)
		}
		if _, err := browser.Eval[bool](p, `(s => { s.value = 'cluster'; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('scope'))`); err != nil {
			t.Fatal(err)
		}
		checkTiles(t, p, cluster, "cluster")
	})

	t.Run("range switch", func(t *testing.T) {
		for _, r := range []struct {
			name   string
			stepMs int
		}{{"1h", 5000}, {"7d", 840000}, {"15m", 2000}} {
			if _, err := browser.Eval[bool](p, fmt.Sprintf(`(s => { s.value = %q; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('range'))`, r.name)); err != nil {
				t.Fatal(err)
			}
			// A new history for the range (from memory or the rollups),
			// then live snapshots.
			if err := p.WaitJS(30*time.Second, fmt.Sprintf(`(s => s.range === %q && s.stepMs === %d && s.historyPoints.requests_total >= 1 && s.status === 'live' && location.hash.includes('range=%s'))(window.meridianDashboard.state())`, r.name, r.stepMs, r.name)); err != nil {
				t.Fatalf("range %s: %v", r.name, err)
			}
		}
	})

	t.Run("edge restart: disconnected, reconnects, no gap", func(t *testing.T) {
		// Count the snapshots published while the edge is away: the
		// resumed page must show every one.
		published := make(chan struct{}, 64)
		sub, err := c.nc.Subscribe(proto.SnapshotSubject(proto.ClusterScope()), func(*nats.Msg) {
			select {
			case published <- struct{}{}:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := p.WaitJS(30*time.Second, `(s => s.status === 'live' && s.historyPoints.requests_total > 0)(window.meridianDashboard.state())`); err != nil {
			t.Fatal(err)
		}
		before := readState(t, p).LastTimestamp
		c.restartEdge(func() {
			if err := p.WaitJS(30*time.Second, `document.getElementById('status').dataset.state === 'disconnected' && document.getElementById('status').textContent.includes('disconnected')`); err != nil {
				t.Fatal(err)
			}
			for len(published) > 0 {
				<-published
			}
			for range 5 {
				select {
				case <-published:
				case <-time.After(20 * time.Second):
					t.Fatal("no snapshots published while the edge is down")
				}
			}
		})
		if err := p.WaitJS(60*time.Second, `window.meridianDashboard.state().status === 'live'`); err != nil {
			t.Fatal(err)
		}
		b0, _ := time.Parse(time.RFC3339, before)
		if err := p.WaitJS(30*time.Second, fmt.Sprintf(`Date.parse(window.meridianDashboard.state().lastTimestamp) >= %d`, b0.Add(8*time.Second).UnixMilli())); err != nil {
			t.Fatal(err)
		}
		s := readState(t, p)
		ts := s.Series["requests_total"].T
		if g := maxGap(ts); g > time.Duration(s.StepMs)*time.Millisecond {
			t.Fatalf("the chart has a gap of %s (step %d ms) after the edge restart; points %v", g, s.StepMs, ts)
		}
		checkTiles(t, p, recordSnapshots(t, c.wsURL), "cluster")
		t.Logf("reconnected after the restart; %d points of requests_total, none further apart than the %d ms step", len(ts), s.StepMs)
	})
}

// TestDashboardOnAnEdgeThatRequiresTokens: the page and its scripts load
// without a token (they hold no data; a browser cannot send one when it
// navigates), the API does not, and the page with #token= goes live.
func TestDashboardOnAnEdgeThatRequiresTokens(t *testing.T) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(context.Background(), auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	c := startDashClusterWith(t, edge.Config{Auth: v})
	for path, want := range map[string]int{"/": 200, "/dashboard/app.js": 200, "/api/metrics/list": 401, "/api/metrics/latest?scope=cluster": 401} {
		resp, err := http.Get(c.httpURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without a token: %d, want %d", path, resp.StatusCode, want)
		}
	}
	tok, err := auth.MintHMAC(secret, auth.MintOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := openDashboard(t, c.httpURL+"/#token="+tok)
	if err := p.WaitJS(30*time.Second, `window.meridianDashboard.state().status === 'live' && document.querySelectorAll('#tiles .tile').length >= 6 && !location.href.includes('token')`); err != nil {
		t.Fatal(err)
	}
}
