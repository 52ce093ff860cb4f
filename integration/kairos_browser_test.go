package integration

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/integration/browser"
)

// The guide's browser examples run in real headless Chromium. The guide
// gives their JavaScript only; the host pages below add what a page needs
// around it (the elements updateDashboard writes, and for MetricsClient,
// which shows nothing, a tap recording what each WebSocket receives) and
// never change the guide's code.

// devEdge is the edge as `meridian dev` runs it, which is where a newcomer
// tries the guide's browser examples: anonymous, any Origin (the page's
// origin is the test's own server).
var devEdge = clusterOptions{edge: edge.Config{AnyOrigin: true}}

// servePage serves html at / and each script at its path, with the guide's
// URL in the scripts replaced by wsURL.
func servePage(t *testing.T, wsURL, html string, scripts ...string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(html))
	})
	// Chromium asks for one; a 404 would be logged as a console error.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, name := range scripts {
		raw, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		src := string(raw)
		if strings.Contains(src, guideURL) {
			src = guideSource(t, name, wsURL)
		}
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Write([]byte(src))
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// noPageErrors fails on any console error or uncaught exception so far.
func noPageErrors(t *testing.T, p *browser.Page) {
	t.Helper()
	if errs := p.Errors(); len(errs) > 0 {
		t.Fatalf("the page logged errors or threw:\n%s", strings.Join(errs, "\n"))
	}
}

// dashboardPage hosts the guide's JavaScript/Browser example. The observer
// records every value updateDashboard writes, per element.
const dashboardPage = `<!doctype html>
<title>Kairos guide: JavaScript/Browser</title>
<p>Requests <span id="total-requests">-</span></p>
<p>Success rate <span id="success-rate">-</span></p>
<p>Average response time <span id="avg-response-time">-</span></p>
<script>
window.__writes = {'total-requests': [], 'success-rate': [], 'avg-response-time': []};
new MutationObserver(records => {
  for (const r of records) window.__writes[r.target.id]?.push(r.target.textContent);
}).observe(document.body, {childList: true, subtree: true});
</script>
<script src="kairos_browser_client.js"></script>
`

// TestKairosGuideBrowserClientUnchanged: the example subscribes to
// requests_total and active_connections every 2 s, then reads success_rate
// and avg_response_time from every Snapshot. Each of its updates must
// write all three numbers, for the first Snapshot and three intervals
// after the subscription, without an exception.
func TestKairosGuideBrowserClientUnchanged(t *testing.T) {
	b := browser.Start(t, browser.Options{})
	c := startCluster(t, devEdge)
	steadyLoad(t, c)
	p := b.NewPage()
	p.Navigate(servePage(t, c.wsURL, dashboardPage, "kairos_browser_client.js"))

	// The first Snapshot, then three at the subscription's 2 s.
	if err := p.WaitJS(30*time.Second, `window.__writes['total-requests'].length >= 4`); err != nil {
		noPageErrors(t, p)
		t.Fatal(err)
	}
	writes, err := browser.Eval[map[string][]string](p, `window.__writes`)
	if err != nil {
		t.Fatal(err)
	}
	noPageErrors(t, p)
	total, rate, avg := writes["total-requests"], writes["success-rate"], writes["avg-response-time"]
	if len(rate) != len(total) || len(avg) != len(total) {
		t.Fatalf("updates: %d of requests, %d of success rate, %d of response time; want all on every snapshot\n%v",
			len(total), len(rate), len(avg), writes)
	}
	for i := range total {
		if !strings.HasSuffix(rate[i], "%") || !strings.HasSuffix(avg[i], "ms") || strings.Contains(rate[i]+avg[i], "NaN") {
			t.Fatalf("update %d shows %q, %q, %q", i, total[i], rate[i], avg[i])
		}
	}
	increasing(t, "requests shown", total[1:])
	// The load fails one request in eight, so the live success rate is
	// below 100 % from the second snapshot on. (Whether it changes between
	// snapshots is not a property of the client: 40 req/s × 2 s is a whole
	// number of eight-request cycles, so it often reads 87.50 % every time.)
	below := false
	for _, r := range rate[1:] {
		if v, err := strconv.ParseFloat(strings.TrimSuffix(r, "%"), 64); err == nil && v < 100 {
			below = true
		}
	}
	if !below {
		t.Errorf("the success rate shown never reflected the errors under load: %v", rate)
	}
}

// metricsClientPage hosts the guide's Best Practices MetricsClient and its
// Subscription Updates snippet. The snippet sends on a global ws; the page
// points that at the client's current socket. The tap records every event
// each socket (numbered from 1 in order of creation) receives and sends.
const metricsClientPage = `<!doctype html>
<title>Kairos guide: MetricsClient</title>
<script>
window.__events = [];
window.__sent = [];
const NativeWebSocket = window.WebSocket;
let sockets = 0;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    const id = this.__id = ++sockets;
    this.addEventListener('message', e => {
      const m = JSON.parse(e.data);
      window.__events.push({id, at: Date.now(), type: m.type, total: m.requests_total,
        rate: m.success_rate, avg: m.avg_response_time, ts: m.timestamp});
    });
    this.addEventListener('close', e => window.__events.push({id, at: Date.now(), type: 'close', code: e.code}));
  }
  send(data) {
    window.__sent.push({id: this.__id, at: Date.now(), data: JSON.parse(data)});
    super.send(data);
  }
};
</script>
<script src="kairos_metrics_client.js"></script>
<script>Object.defineProperty(window, 'ws', {get: () => client.ws});</script>
<script src="kairos_subscription_updates.js"></script>
`

type tapEvent struct {
	ID    int      `json:"id"`
	At    float64  `json:"at"`
	Type  string   `json:"type"`
	Total *float64 `json:"total"`
	Rate  *float64 `json:"rate"`
	Avg   *float64 `json:"avg"`
	Code  int      `json:"code"`
}

type tapSent struct {
	ID   int            `json:"id"`
	At   float64        `json:"at"`
	Data map[string]any `json:"data"`
}

// TestKairosGuideMetricsClientReconnects runs MetricsClient with
// Subscription Updates: all metrics every second, after 10 s only
// requests_total every 5 s; three intervals later the edge restarts on the
// same port, and the client must reconnect, subscribe again and go on with
// counters that continue where they were.
func TestKairosGuideMetricsClientReconnects(t *testing.T) {
	b := browser.Start(t, browser.Options{})
	c := startCluster(t, devEdge)
	steadyLoad(t, c)
	p := b.NewPage()
	p.Navigate(servePage(t, c.wsURL, metricsClientPage, "kairos_metrics_client.js", "kairos_subscription_updates.js"))

	snapsAfter := func(id, nth int) string { // JS: Snapshots on socket id after its nth send
		return `(() => { const s = window.__sent.filter(x => x.id === ` + strconv.Itoa(id) + `);
			if (s.length < ` + strconv.Itoa(nth) + `) return 0;
			const from = s[` + strconv.Itoa(nth-1) + `].at;
			return window.__events.filter(e => e.id === ` + strconv.Itoa(id) + ` && e.type === 'Snapshot' && e.at > from).length; })()`
	}
	// 10 s of 1 s snapshots, the update, then three 5 s intervals.
	if err := p.WaitJS(60*time.Second, snapsAfter(1, 2)+` >= 3`); err != nil {
		noPageErrors(t, p)
		t.Fatal(err)
	}
	c.restartEdge()
	if err := p.WaitJS(30*time.Second, snapsAfter(2, 1)+` >= 4`); err != nil { // the one on connect, then three
		noPageErrors(t, p)
		t.Fatal(err)
	}
	noPageErrors(t, p)

	events, err := browser.Eval[[]tapEvent](p, `window.__events`)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := browser.Eval[[]tapSent](p, `window.__sent`)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 3 || sent[0].ID != 1 || sent[1].ID != 1 || sent[2].ID != 2 ||
		sent[1].Data["interval_seconds"] != 5.0 || sent[2].Data["interval_seconds"] != 1.0 {
		t.Fatalf("sent %+v; want the subscription, its update, and the subscription again on the new socket", sent)
	}
	var closeCode int
	var before, after []tapEvent
	for _, e := range events {
		switch {
		case e.Type == "close" && e.ID == 1:
			closeCode = e.Code
		case e.Type != "Snapshot":
		case e.ID == 1 && e.At > sent[1].At:
			before = append(before, e)
		case e.ID == 2:
			after = append(after, e)
		}
	}
	if closeCode != 1001 {
		t.Errorf("the edge's restart closed the first socket with %d, want 1001", closeCode)
	}
	for _, e := range append(before, after...) {
		if e.Total == nil || e.Rate == nil || e.Avg == nil {
			t.Fatalf("socket %d got a Snapshot without a guide field: %+v", e.ID, e)
		}
	}
	for i := 1; i < len(before); i++ {
		if gap := before[i].At - before[i-1].At; gap < 3500 || gap > 7500 { // generous: the machine is loaded
			t.Errorf("snapshots %v ms apart after the update, want 5 s", gap)
		}
	}
	if *after[0].Total < *before[len(before)-1].Total {
		t.Errorf("after the reconnect requests_total %v is below the %v before it", *after[0].Total, *before[len(before)-1].Total)
	}
	if *after[len(after)-1].Total <= *before[0].Total {
		t.Errorf("requests_total did not grow across the restart: %v then %v", *before[0].Total, *after[len(after)-1].Total)
	}
}
