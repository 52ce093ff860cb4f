package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meridian-metrics/meridian/broker/dashboard"
	"github.com/meridian-metrics/meridian/integration/browser"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// scriptedEdge serves the real dashboard with a scripted stand-in for the
// edge's API, for what today's edge cannot do on demand: refuse a token
// (issue 12 adds that to the edge), end a connection with 4401, or stream
// thousands of snapshots in seconds. It records every request's
// credentials.
type scriptedEdge struct {
	t   *testing.T
	srv *httptest.Server
	// wantToken, when set, is the only token accepted (401 otherwise).
	wantToken string
	// stream runs on each WebSocket after the subscription arrives.
	stream func(conn net.Conn, rw *bufio.ReadWriter)
	// listed are metrics /api/metrics/list names beyond the guide's six.
	listed []string
	// onlyScope, when set, is the one scope the token allows (403 for
	// others, on the WebSocket before the upgrade and on /latest).
	onlyScope string

	mu       sync.Mutex
	requests []seenRequest
	subs     []string // subscription messages received
	wg       sync.WaitGroup
}

type seenRequest struct {
	Path, Query, Authorization string
	Protocol                   string // Sec-WebSocket-Protocol as offered
}

// scriptedOptions are a scriptedEdge's fixed settings.
type scriptedOptions struct {
	wantToken, onlyScope string
	listed               []string
}

func startScriptedEdge(t *testing.T, o scriptedOptions, stream func(net.Conn, *bufio.ReadWriter)) *scriptedEdge {
	t.Helper()
	s := &scriptedEdge{t: t, wantToken: o.wantToken, onlyScope: o.onlyScope, listed: o.listed, stream: stream}
	mux := http.NewServeMux()
	dashboard.New().Mount(mux)
	mux.HandleFunc("GET /api/metrics/list", s.api(func(w http.ResponseWriter) {
		var metrics []map[string]string
		for _, m := range append(guideNames(), s.listed...) {
			metrics = append(metrics, map[string]string{"name": m})
		}
		json.NewEncoder(w).Encode(map[string]any{"metrics": metrics, "scopes": []string{"cluster", "region.eu"}})
	}))
	latest := s.api(func(w http.ResponseWriter) {
		fmt.Fprintf(w, `{"scope":"region.eu","timestamp":%q,"requests_total":10,"requests_error":1,"instances":1}`, time.Now().UTC().Format(time.RFC3339))
	})
	mux.HandleFunc("GET /api/metrics/latest", func(w http.ResponseWriter, r *http.Request) {
		if sc := r.URL.Query().Get("scope"); s.onlyScope != "" && sc != s.onlyScope {
			s.record(r)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintln(w, `{"error":"scope outside the token"}`)
			return
		}
		latest(w, r)
	})
	mux.HandleFunc("GET /ws/metrics", func(w http.ResponseWriter, r *http.Request) {
		s.record(r)
		offered := r.Header.Get("Sec-WebSocket-Protocol")
		if !s.allowed(strings.TrimPrefix(offered, "bearer.")) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		if sc, _ := proto.ScopeOf(r.URL.Query().Get("region"), r.URL.Query().Get("instance")); s.onlyScope != "" && sc.String() != s.onlyScope {
			http.Error(w, "scope outside the token", http.StatusForbidden)
			return
		}
		// Like the real edge, echo the token's subprotocol: a browser fails a
		// handshake that offered protocols and got none back.
		up := ws.HTTPUpgrader{Protocol: func(p string) bool { return p == offered }}
		conn, rw, _, err := up.Upgrade(r, w)
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conn.Close()
			sub, err := wsutil.ReadClientText(rw)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.subs = append(s.subs, string(sub))
			s.mu.Unlock()
			s.stream(conn, rw)
			// Hold the connection until the page or the test ends it.
			for {
				if _, err := wsutil.ReadClientText(rw); err != nil {
					return
				}
			}
		}()
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
		s.wg.Wait()
	})
	return s
}

// guideNames are the guide's six metric names: an edge that knows no
// Meridian extras lists only these.
func guideNames() []string {
	var names []string
	for _, m := range proto.GuideMetrics.Metrics() {
		names = append(names, m.String())
	}
	return names
}

func (s *scriptedEdge) allowed(token string) bool { return s.wantToken == "" || token == s.wantToken }

func (s *scriptedEdge) api(body func(http.ResponseWriter)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.record(r)
		if !s.allowed(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"invalid token"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		body(w)
	}
}

func (s *scriptedEdge) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, seenRequest{r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Sec-WebSocket-Protocol")})
}

func (s *scriptedEdge) seen() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenRequest(nil), s.requests...)
}

// waitSeen waits until a request satisfies cond.
func (s *scriptedEdge) waitSeen(what string, cond func(seenRequest) bool) {
	s.t.Helper()
	wait.For(s.t, 30*time.Second, what, func() bool {
		for _, r := range s.seen() {
			if cond(r) {
				return true
			}
		}
		return false
	})
}

// writeSnapshots writes snapshots from..to-1 of n taken one second apart
// and ending at end.
func writeSnapshots(conn net.Conn, end time.Time, n, from, to int) error {
	var buf []byte
	for i := from; i < to; i++ {
		total := uint64(20 * (i + 1))
		s := proto.Snapshot{
			Time: end.Add(time.Duration(i-n+1) * time.Second), RequestsTotal: total, RequestsSuccess: total - total/20,
			RequestsError: total / 20, ActiveConnections: int64(i % 7), AvgResponseTimeMs: float64(i%50) / 3, SuccessRate: 95,
		}
		buf = proto.AppendSnapshotEvent(buf[:0], &s, proto.GuideMetrics)
		if err := wsutil.WriteServerText(conn, buf); err != nil {
			return err
		}
	}
	return nil
}

// sendSnapshots streams n snapshots one second apart, ending now.
func sendSnapshots(n int) func(net.Conn, *bufio.ReadWriter) {
	return func(conn net.Conn, _ *bufio.ReadWriter) {
		_ = writeSnapshots(conn, time.Now().UTC().Truncate(time.Second), n, 0, n)
	}
}

func TestDashboardSendsTheTokenAndKeepsItOutOfSight(t *testing.T) {
	const token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2MifQ.c2lnbmF0dXJl" // JWT-shaped, signs nothing
	s := startScriptedEdge(t, scriptedOptions{wantToken: token}, sendSnapshots(3))
	p := openDashboard(t, s.srv.URL+"/#token="+token+"&range=1h")
	s.waitSeen("the WebSocket with the token as its bearer subprotocol", func(r seenRequest) bool {
		return r.Path == "/ws/metrics" && r.Protocol == "bearer."+token && !strings.Contains(r.Query, token) && r.Authorization == ""
	})
	s.waitSeen("REST with Authorization: Bearer", func(r seenRequest) bool {
		return r.Path == "/api/metrics/list" && r.Authorization == "Bearer "+token && !strings.Contains(r.Query, token)
	})
	s.waitSeen("the region poll with Authorization: Bearer", func(r seenRequest) bool {
		return r.Path == "/api/metrics/latest" && r.Authorization == "Bearer "+token
	})
	if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().status === 'live'`); err != nil {
		t.Fatal(err)
	}
	// The token is gone from the address bar (so from bookmarks and
	// screenshots) and from the page, and was not stored; other settings
	// in the fragment stay.
	where, err := browser.Eval[map[string]string](p, `({href: location.href, html: document.documentElement.outerHTML,
		stored: JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie})`)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range where {
		if strings.Contains(v, token) {
			t.Errorf("the token is visible in %s", k)
		}
	}
	if !strings.Contains(where["href"], "range=1h") {
		t.Errorf("href %q lost the fragment's other settings", where["href"])
	}
	for _, r := range s.seen() {
		if strings.Contains(r.Query, token) {
			t.Errorf("%s got the token in its URL", r.Path)
		}
	}
}

func TestDashboardAsksForATokenOn401(t *testing.T) {
	s := startScriptedEdge(t, scriptedOptions{wantToken: "right-token"}, sendSnapshots(3))
	p := openDashboard(t, s.srv.URL+"/", "the server responded with a status of 401")
	if err := p.WaitJS(20*time.Second, `document.getElementById('status').dataset.state === 'auth' && !document.getElementById('auth').hidden &&
		document.getElementById('banner').textContent.includes('401')`); err != nil {
		t.Fatal(err)
	}
	if _, err := browser.Eval[bool](p, `(() => { document.getElementById('token').value = 'right-token';
		document.getElementById('auth').requestSubmit(); return true; })()`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().status === 'live' && document.getElementById('auth').hidden && document.getElementById('token').value === ''`); err != nil {
		t.Fatal(err)
	}
	s.waitSeen("the WebSocket with the entered token", func(r seenRequest) bool {
		return r.Path == "/ws/metrics" && r.Protocol == "bearer.right-token"
	})
}

// TestDashboardSaysWhenTheScopeIsOutsideTheToken: the edge refuses the
// handshake with 403; the page finds out why over REST, says so, stops
// retrying, and works once a scope the token allows is picked.
func TestDashboardSaysWhenTheScopeIsOutsideTheToken(t *testing.T) {
	s := startScriptedEdge(t, scriptedOptions{wantToken: "eu-only", onlyScope: "region.eu"}, sendSnapshots(3))
	p := openDashboard(t, s.srv.URL+"/#token=eu-only", "the server responded with a status of 403", "Unexpected response code: 403")
	if err := p.WaitJS(20*time.Second, `document.getElementById('status').dataset.state === 'auth' &&
		document.getElementById('banner').textContent.includes('does not allow cluster (403)')`); err != nil {
		t.Fatal(err)
	}
	if _, err := browser.Eval[bool](p, `(s => { s.value = 'region.eu'; s.dispatchEvent(new Event('change')); return true; })(document.getElementById('scope'))`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().status === 'live' && document.getElementById('banner').hidden`); err != nil {
		t.Fatal(err)
	}
}

func TestDashboardSaysWhenTheTokenExpires(t *testing.T) {
	s := startScriptedEdge(t, scriptedOptions{}, func(conn net.Conn, rw *bufio.ReadWriter) {
		sendSnapshots(2)(conn, rw)
		_ = ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(4401, "token expired")))
	})
	p := openDashboard(t, s.srv.URL+"/#token=soon-expired")
	if err := p.WaitJS(20*time.Second, `document.getElementById('status').dataset.state === 'auth' && !document.getElementById('auth').hidden &&
		document.getElementById('banner').textContent.includes('expired')`); err != nil {
		t.Fatal(err)
	}
	if n := len(s.seen()); n == 0 {
		t.Fatal("no requests seen")
	}
}

// TestDashboardLatencyTiles: the latency percentiles are asked for by name
// only when the edge lists them (naming an unknown metric is an error), and
// get a tile each when snapshots carry them.
func TestDashboardLatencyTiles(t *testing.T) {
	latency := []string{"latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms"}
	for _, tt := range []struct {
		name   string
		listed []string
	}{{"without", nil}, {"with", latency}} {
		t.Run(tt.name, func(t *testing.T) {
			s := startScriptedEdge(t, scriptedOptions{listed: tt.listed}, func(conn net.Conn, _ *bufio.ReadWriter) {
				snap := proto.Snapshot{Time: time.Now().UTC().Truncate(time.Second), RequestsTotal: 10, RequestsSuccess: 10, SuccessRate: 100}
				ev := proto.AppendSnapshotEvent(nil, &snap, proto.GuideMetrics)
				for i, m := range tt.listed {
					ev = append(ev[:len(ev)-1], fmt.Sprintf(`,%q:%d.5}`, m, 10*(i+1))...)
				}
				_ = wsutil.WriteServerText(conn, ev)
			})
			p := openDashboard(t, s.srv.URL+"/")
			if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().status === 'live'`); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			subs := append([]string(nil), s.subs...)
			s.mu.Unlock()
			var sub struct{ Metrics []string }
			if len(subs) == 0 || json.Unmarshal([]byte(subs[0]), &sub) != nil {
				t.Fatalf("subscriptions %q", subs)
			}
			if want := append(guideNames(), tt.listed...); !slices.Equal(sub.Metrics, want) {
				t.Fatalf("subscribed to %v, want %v", sub.Metrics, want)
			}
			tiles := readTiles(t, p)
			for i, m := range latency {
				got, shown := tiles.Text[m]
				if want := fmt.Sprintf("%d.5 ms", 10*(i+1)); tt.listed != nil && got != want || tt.listed == nil && shown {
					t.Errorf("%s tile %q (shown %v)", m, got, shown)
				}
			}
		})
	}
}

// TestDashboardChangeOverTheLastMinute: a page opened a moment ago takes
// the tiles' one-minute change from history.
func TestDashboardChangeOverTheLastMinute(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	bucket := now.Truncate(2 * time.Second) // the 15 min range's step
	var points []proto.Point
	for k := 60; k >= 1; k-- {
		points = append(points, proto.Point{Time: bucket.Add(-time.Duration(k) * 2 * time.Second), Value: float64(10 * (60 - k))})
	}
	s := startScriptedEdge(t, scriptedOptions{}, func(conn net.Conn, _ *bufio.ReadWriter) {
		_ = wsutil.WriteServerText(conn, proto.AppendTimeSeriesEvent(nil, proto.RequestsTotal, points))
		snap := proto.Snapshot{Time: now, RequestsTotal: 2000, RequestsSuccess: 2000, SuccessRate: 100}
		_ = wsutil.WriteServerText(conn, proto.AppendSnapshotEvent(nil, &snap, proto.GuideMetrics))
	})
	// The newest history point whose bucket ended a minute or more ago.
	var base proto.Point
	for _, p := range points {
		if !p.Time.Add(time.Second).After(now.Add(-time.Minute)) {
			base = p
		}
	}
	want := fmt.Sprintf("+%s in %d s", commas(uint64(2000-base.Value)), int(now.Sub(base.Time.Add(time.Second)).Seconds()))
	p := openDashboard(t, s.srv.URL+"/")
	if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().status === 'live'`); err != nil {
		t.Fatal(err)
	}
	got, err := browser.Eval[string](p, `document.querySelector('[data-metric="requests_total"] .change').textContent`)
	if err != nil || !strings.HasPrefix(got, want) {
		t.Fatalf("requests_total change %q (%v), want it to start %q", got, err, want)
	}
}

func TestDashboardSaysWhenDataIsStale(t *testing.T) {
	// Two snapshots, then silence on an open connection: an edge whose
	// aggregator went away.
	s := startScriptedEdge(t, scriptedOptions{}, sendSnapshots(2))
	p := openDashboard(t, s.srv.URL+"/")
	if err := p.WaitJS(20*time.Second, `window.meridianDashboard.state().lastTimestamp !== null`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitJS(20*time.Second, `document.getElementById('status').dataset.state === 'stale' &&
		document.getElementById('status').textContent.includes('no data for') &&
		document.getElementById('banner').textContent.includes('No new snapshot')`); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardMemoryStaysBounded feeds the page 20 000 snapshots (5.5 hours
// at one a second) over a real WebSocket and measures the JS heap after
// forced collections: points are bucketed and trimmed to the range, so the
// heap must not grow with the snapshots appended.
func TestDashboardMemoryStaysBounded(t *testing.T) {
	const n, warm = 20000, 1000
	const bound = 4 << 20       // stated bound on the used JS heap, bytes
	const maxGrowth = 256 << 10 // from 1 000 to 20 000 snapshots, bytes
	end := time.Now().UTC().Truncate(time.Second)
	stamp := func(i int) string {
		return end.Add(time.Duration(i-n+1) * time.Second).Format("2006-01-02T15:04:05.000Z")
	}
	release := make(chan struct{})
	s := startScriptedEdge(t, scriptedOptions{}, func(conn net.Conn, _ *bufio.ReadWriter) {
		if writeSnapshots(conn, end, n, 0, warm) != nil {
			return
		}
		select {
		case <-release:
		case <-time.After(60 * time.Second):
			return
		}
		_ = writeSnapshots(conn, end, n, warm, n)
	})
	p := openDashboard(t, s.srv.URL+"/#range=15m")
	heap := func(i int) float64 {
		t.Helper()
		if err := p.WaitJS(60*time.Second, fmt.Sprintf(`window.meridianDashboard.state().lastTimestamp === %q`, stamp(i))); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(p.Context(), 30*time.Second)
		defer cancel()
		if _, err := chromedp.Call(ctx, heapprofiler.CollectGarbage, cdp.Empty{}); err != nil {
			t.Fatal(err)
		}
		u, err := chromedp.Call(ctx, runtime.GetHeapUsage, cdp.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		return u.UsedSize
	}
	first := heap(warm - 1)
	close(release)
	last := heap(n - 1)
	st := readState(t, p)
	points := len(st.Series["requests_total"].T)
	t.Logf("JS heap used after GC: %.2f MiB after %d snapshots, %.2f MiB after %d (growth %+.0f KiB); %d points per series",
		first/(1<<20), warm, last/(1<<20), n, (last-first)/1024, points)
	if points > 15*60/2+1 {
		t.Errorf("%d points of requests_total held; the 15 min range at a 2 s step needs at most 451", points)
	}
	if last > bound || last-first > maxGrowth {
		t.Errorf("JS heap %.2f MiB after %d snapshots (%.2f MiB after %d): want ≤ %d MiB and growth ≤ %d KiB",
			last/(1<<20), n, first/(1<<20), warm, bound>>20, maxGrowth>>10)
	}
}
