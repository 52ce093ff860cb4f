package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/gateway/demo"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// testNode is a running Node with its NATS connection and report feed.
type testNode struct {
	*Node
	url     string
	reports *nats.Subscription
	runErr  chan error
	client  *http.Client
	// shutdownErr is the error the test expects the node's Shutdown to have
	// returned by cleanup time.
	shutdownErr error
}

// startNode starts a Node in front of upstream on a 127.0.0.1:0 listener,
// with reports subscribed before the first one goes out. modify may adjust
// the Config. The node is shut down at cleanup.
func startNode(t *testing.T, upstream string, modify func(*Config)) *testNode {
	t.Helper()
	_, nc := natstest.StartTest(t)
	return startNodeOn(t, nc, upstream, modify)
}

func startNodeOn(t *testing.T, nc *nats.Conn, upstream string, modify func(*Config)) *testNode {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Upstream:        u,
		Listener:        ln,
		Region:          "eu",
		Instance:        "gw-1",
		NATS:            nc,
		PublishInterval: time.Hour, // tests look at the first and the final report
		Logger:          quietLogger(),
	}
	if modify != nil {
		modify(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("new gateway: %v", err)
	}
	sub, err := nc.SubscribeSync(proto.ReportSubject(cfg.Region, cfg.Instance))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{
		Node:    n,
		url:     "http://" + ln.Addr().String(),
		reports: sub,
		runErr:  make(chan error, 1),
		client:  &http.Client{Transport: &http.Transport{}},
	}
	go func() { tn.runErr <- n.Run(context.Background()) }()
	wait.For(t, 10*time.Second, "the node to be ready", func() bool {
		select {
		case err := <-tn.runErr:
			t.Fatalf("run gateway: %v", err)
		default:
		}
		_, ok := n.Ready()
		return ok
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); !errors.Is(err, tn.shutdownErr) {
			t.Errorf("shutdown at cleanup: %v, want %v", err, tn.shutdownErr)
		}
		if err := <-tn.runErr; err != nil {
			t.Errorf("run: %v", err)
		}
		tn.client.CloseIdleConnections()
	})
	return tn
}

// get requests path through the gateway and returns the status, reading
// and closing the body.
func (tn *testNode) get(t *testing.T, path string) int {
	t.Helper()
	resp, err := tn.client.Get(tn.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// nextReport waits for the next report on the node's subject.
func (tn *testNode) nextReport(t *testing.T) proto.Report {
	t.Helper()
	msg, err := tn.reports.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("waiting for a report: %v", err)
	}
	r, err := proto.DecodeReport(msg.Data)
	if err != nil {
		t.Fatalf("decode report: %v", err)
	}
	return r
}

// finalReport skips to the final report.
func (tn *testNode) finalReport(t *testing.T) proto.Report {
	t.Helper()
	for {
		if r := tn.nextReport(t); r.Final {
			return r
		}
	}
}

// shutdown stops the node and checks that Run returned cleanly.
func (tn *testNode) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tn.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// waitRecorded waits until the node has recorded n requests. The client
// can see a response before the handler has returned and recorded it.
func (tn *testNode) waitRecorded(t *testing.T, n uint64) proto.Counters {
	t.Helper()
	var c proto.Counters
	wait.For(t, 5*time.Second, "requests to be recorded", func() bool {
		c = tn.Counters()
		return c.RequestsTotal >= n && c.ActiveConnections == 0
	})
	if c.RequestsTotal != n {
		t.Fatalf("recorded %d requests, want %d", c.RequestsTotal, n)
	}
	return c
}

func demoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(demo.Handler(demo.Config{Latency: demo.Constant(0)}))
	t.Cleanup(up.Close)
	return up
}

func TestNodeCountsStatusClasses(t *testing.T) {
	up := demoUpstream(t)
	reg := prometheus.NewPedanticRegistry()
	tn := startNode(t, up.URL, func(c *Config) { c.Registerer = reg; c.Namespace = "test" })
	tn.nextReport(t)

	requests := map[string]int{ // path -> status the client must see
		"/a":            200,
		"/b?x=1":        200,
		"/?status=201":  201,
		"/?status=302":  302,
		"/?status=404":  404,
		"/?status=429":  429,
		"/?status=503":  503,
		"/?status=500":  500,
		"/?status=103":  200, // an informational response first; the final one is 200
		"/?status=oops": 400, // the demo's own validation
	}
	var want [numClasses]uint64
	tn.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for path, status := range requests {
		if got := tn.get(t, path); got != status {
			t.Errorf("GET %s: status %d, want %d", path, got, status)
		}
		want[classOf(status)]++
	}
	c := tn.waitRecorded(t, uint64(len(requests)))
	if got := classCounts(tn.rec); got != want {
		t.Errorf("class counts %v, want %v", got, want)
	}
	if c.RequestsSuccess != 5 || c.RequestsError != 5 {
		t.Errorf("success %d error %d, want 5 and 5", c.RequestsSuccess, c.RequestsError)
	}

	// The node's Prometheus metrics read the same counts.
	want4xx := `
# HELP test_gateway_reports_published_total Counter reports published to NATS.
# TYPE test_gateway_reports_published_total counter
test_gateway_reports_published_total 1
# HELP test_proxy_requests_total Requests proxied by this gateway instance, by status class; 499 (client went away) counts as 4xx.
# TYPE test_proxy_requests_total counter
test_proxy_requests_total{code="1xx"} 0
test_proxy_requests_total{code="2xx"} 4
test_proxy_requests_total{code="3xx"} 1
test_proxy_requests_total{code="4xx"} 3
test_proxy_requests_total{code="5xx"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want4xx),
		"test_proxy_requests_total", "test_gateway_reports_published_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestNodeForwardsRequests(t *testing.T) {
	type seen struct {
		path, query, host, xff, xfh, xfp string
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto")}
		w.Header().Set("X-Upstream", "yes")
		io.WriteString(w, "hello")
	}))
	defer up.Close()
	tn := startNode(t, up.URL+"/base", nil)

	req, _ := http.NewRequest("GET", tn.url+"/x/y?q=1", nil)
	req.Host = "public.example"
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // spoofed; must be replaced
	resp, err := tn.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || resp.Header.Get("X-Upstream") != "yes" {
		t.Errorf("response %q with headers %v", body, resp.Header)
	}
	s := <-got
	upHost := strings.TrimPrefix(up.URL, "http://")
	want := seen{"/base/x/y", "q=1", upHost, "127.0.0.1", "public.example", "http"}
	if s != want {
		t.Errorf("upstream saw %+v, want %+v", s, want)
	}
}

func TestNodeDeadUpstream(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	tn := startNode(t, dead, nil)

	resp, err := tn.client.Get(tn.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	// The client learns nothing about the gateway's internals.
	if strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "refused") {
		t.Errorf("502 body leaks the cause: %q", body)
	}
	c := tn.waitRecorded(t, 1)
	if c.RequestsError != 1 || classCounts(tn.rec)[class5xx] != 1 {
		t.Errorf("counters %+v, want one 5xx error", c)
	}
}

func TestNodeUpstreamTimeout(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers in time
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer up.Close()
	defer close(release)
	tn := startNode(t, up.URL, func(c *Config) { c.UpstreamTimeout = 100 * time.Millisecond })

	start := time.Now()
	if got := tn.get(t, "/slow"); got != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("504 took %s; the 100ms upstream timeout did not apply", d)
	}
	tn.waitRecorded(t, 1)
	if got := classCounts(tn.rec)[class5xx]; got != 1 {
		t.Errorf("5xx count %d, want 1", got)
	}
}

func TestNodeClientCancel(t *testing.T) {
	arrived := make(chan struct{})
	upstreamCancelled := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // the gateway must pass the cancellation on
		close(upstreamCancelled)
	}))
	defer up.Close()
	tn := startNode(t, up.URL, nil)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", tn.url+"/", nil)
		resp, err := tn.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	if a := tn.rec.Active(); a != 1 {
		t.Errorf("in flight = %d while the upstream holds the request, want 1", a)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error %v, want context.Canceled", err)
	}
	select {
	case <-upstreamCancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled")
	}
	tn.waitRecorded(t, 1)
	onlyStatus(t, tn.rec, StatusClientClosedRequest)
}

// TestNodeFinalReportExact drives real load through the gateway and checks
// that the final report carries exactly what was sent.
func TestNodeFinalReportExact(t *testing.T) {
	up := demoUpstream(t)
	tn := startNode(t, up.URL, nil)

	first := tn.nextReport(t)
	if first.Seq != 1 || first.Final || first.BootID != tn.BootID() || first.RequestsTotal != 0 {
		t.Errorf("first report %+v", first)
	}

	const n = 300
	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Targets:     []string{tn.url + "/load"},
		RPS:         3000,
		Requests:    n,
		ErrorRatio:  0.1,
		Concurrency: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != n || res.Succeeded != 270 || res.Failed != 30 {
		t.Fatalf("load result %v", res)
	}
	tn.shutdown(t)

	final := tn.finalReport(t)
	if final.RequestsTotal != n || final.RequestsSuccess != 270 || final.RequestsError != 30 ||
		final.DurationCount != n || final.ActiveConnections != 0 {
		t.Errorf("final report counters %+v, want %d requests, 30 errors, none active", final.Counters, n)
	}
	var buckets uint64
	for _, b := range final.LatencyBuckets {
		buckets += b
	}
	if buckets != n {
		t.Errorf("final histogram holds %d requests, want %d", buckets, n)
	}
	if final.Seq <= first.Seq || final.BootID != first.BootID || !final.StartTime.Equal(first.StartTime) {
		t.Errorf("final report %+v does not continue the first %+v", final, first)
	}
	if _, err := tn.reports.NextMsg(50 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("a report followed the final one (err %v)", err)
	}
}

func TestNodeShutdownDrainsInFlight(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "done")
	}))
	defer up.Close()
	tn := startNode(t, up.URL, nil)

	status := make(chan int, 1)
	go func() {
		resp, err := tn.client.Get(tn.url + "/")
		if err != nil {
			status <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-arrived
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- tn.Shutdown(ctx)
	}()
	// Shutdown is waiting for the request; new connections are refused.
	wait.For(t, 5*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(tn.url, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got := <-status; got != 200 {
		t.Errorf("in-flight request got %d, want 200", got)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	final := tn.finalReport(t)
	if final.RequestsTotal != 1 || final.RequestsSuccess != 1 || final.ActiveConnections != 0 {
		t.Errorf("final report %+v, want the drained request counted", final.Counters)
	}
}

// TestNodeShutdownDeadline checks the forced path: a request the upstream
// never answers is cancelled when Shutdown's context ends, recorded as 503,
// and the final report still goes out.
func TestNodeShutdownDeadline(t *testing.T) {
	arrived := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}))
	defer up.Close()
	tn := startNode(t, up.URL, nil)

	status := make(chan int, 1)
	go func() {
		resp, err := tn.client.Get(tn.url + "/")
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := tn.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if strings.Contains(err.Error(), "final report") {
		t.Errorf("shutdown error %v: the final report should have gone out regardless", err)
	}
	tn.shutdownErr = context.DeadlineExceeded
	<-status // the client sees a dropped connection or the 503; either way it is done
	final := tn.finalReport(t)
	if final.RequestsTotal != 1 || final.RequestsError != 1 || final.ActiveConnections != 0 {
		t.Errorf("final report %+v, want the cancelled request counted as an error", final.Counters)
	}
	if got := classCounts(tn.rec)[class5xx]; got != 1 {
		t.Errorf("5xx count %d, want 1 (503 for a request the gateway cancelled)", got)
	}
	// Later calls return the first call's result.
	if err2 := tn.Shutdown(context.Background()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second Shutdown = %v, want %v", err2, err)
	}
}

// TestNodeShutdownWaitsForUpgrades checks that a proxied protocol switch
// (a WebSocket-like tunnel, which http.Server.Shutdown does not track) is
// waited for and counted as 101.
func TestNodeShutdownWaitsForUpgrades(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("upstream hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for { // echo lines until the client hangs up
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	}))
	defer up.Close()
	tn := startNode(t, up.URL, nil)

	conn, err := net.Dial("tcp", strings.TrimPrefix(tn.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the gateway: %v, %v", resp, err)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo through the tunnel = %q, %v", line, err)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- tn.Shutdown(ctx)
	}()
	// The tunnel still works while Shutdown waits for it.
	io.WriteString(conn, "still there\n")
	if line, err := br.ReadString('\n'); err != nil || line != "still there\n" {
		t.Fatalf("echo during shutdown = %q, %v", line, err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a tunnel was open", err)
	default:
	}
	conn.Close()
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	final := tn.finalReport(t)
	if final.RequestsTotal != 1 || final.RequestsSuccess != 1 || final.ActiveConnections != 0 {
		t.Errorf("final report %+v, want the tunnel counted once as a success", final.Counters)
	}
	if got := classCounts(tn.rec)[class1xx]; got != 1 {
		t.Errorf("1xx count %d, want 1", got)
	}
}

func TestNodeBootIDsDiffer(t *testing.T) {
	up := demoUpstream(t)
	_, nc := natstest.StartTest(t)
	a := startNodeOn(t, nc, up.URL, nil)
	b := startNodeOn(t, nc, up.URL, func(c *Config) { c.Instance = "gw-2" })
	ra, rb := a.nextReport(t), b.nextReport(t)
	if ra.BootID == "" || ra.BootID == rb.BootID {
		t.Fatalf("boot ids %q and %q, want two different ones", ra.BootID, rb.BootID)
	}
	if ra.BootID != a.BootID() || rb.Instance != "gw-2" {
		t.Errorf("reports %+v and %+v", ra, rb)
	}
}

func TestNodeRunCancelShutsDownGracefully(t *testing.T) {
	up := demoUpstream(t)
	_, nc := natstest.StartTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.URL)
	n, err := New(Config{Upstream: u, Listener: ln, Region: "eu", Instance: "gw-1", NATS: nc, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := nc.SubscribeSync(proto.ReportSubject("eu", "gw-1"))
	nc.Flush()

	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	if reason, ok := n.Ready(); ok || reason != "gateway is not serving yet" {
		t.Errorf("Ready before Run = %q, %v", reason, ok)
	}
	go func() { runErr <- n.Run(ctx) }()
	wait.For(t, 10*time.Second, "Ready", func() bool { _, ok := n.Ready(); return ok })
	if n.Addr().String() != ln.Addr().String() {
		t.Errorf("Addr %v, want %v", n.Addr(), ln.Addr())
	}
	if err := n.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	for {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no final report after Run's context ended: %v", err)
		}
		if r, _ := proto.DecodeReport(msg.Data); r.Final {
			break
		}
	}
	if err := n.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after shutdown: %v, want ErrClosed", err)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after Run's own shutdown: %v", err)
	}
}

func TestNodeShutdownBeforeRun(t *testing.T) {
	_, nc := natstest.StartTest(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://127.0.0.1:1")
	n, err := New(Config{Upstream: u, Listener: ln, Region: "eu", Instance: "gw-1", NATS: nc, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// The listener is the node's from New on: Addr works before Run.
	if n.Addr().String() != ln.Addr().String() {
		t.Errorf("Addr before Run = %v, want %v", n.Addr(), ln.Addr())
	}
	var wg sync.WaitGroup
	for range 3 { // concurrent calls are fine
		wg.Go(func() {
			if err := n.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown before Run: %v", err)
			}
		})
	}
	wg.Wait()
	if err := n.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Shutdown: %v, want ErrClosed", err)
	}
	// The node owned the listener and closed it.
	if _, err := ln.Accept(); err == nil {
		t.Error("listener still open after Shutdown")
	}
}

func TestNewValidates(t *testing.T) {
	_, nc := natstest.StartTest(t)
	good := func() Config {
		u, _ := url.Parse("http://127.0.0.1:9")
		return Config{Upstream: u, Listen: "127.0.0.1:0", Region: "eu", Instance: "gw-1", NATS: nc}
	}
	shutdown := func(n *Node) {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown before Run: %v", err)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no upstream", func(c *Config) { c.Upstream = nil }, "Upstream is required"},
		{"relative upstream", func(c *Config) { c.Upstream = &url.URL{Path: "/x"} }, "absolute http or https URL"},
		{"ftp upstream", func(c *Config) { c.Upstream, _ = url.Parse("ftp://h/") }, "absolute http or https URL"},
		{"no region", func(c *Config) { c.Region = "" }, "region is empty"},
		{"bad instance", func(c *Config) { c.Instance = "gw.1" }, `instance "gw.1" has character '.'`},
		{"no nats", func(c *Config) { c.NATS = nil }, "NATS connection is required"},
		{"negative timeout", func(c *Config) { c.UpstreamTimeout = -1 }, "UpstreamTimeout -1ns must not be negative"},
		{"negative interval", func(c *Config) { c.PublishInterval = -time.Second }, "PublishInterval -1s must not be negative"},
		{"negative drain", func(c *Config) { c.DrainTimeout = -1 }, "DrainTimeout -1ns must not be negative"},
		{"duplicate metrics", func(c *Config) {
			reg := prometheus.NewRegistry()
			n, err := New(Config{Upstream: c.Upstream, Listen: "127.0.0.1:0", Region: "eu", Instance: "gw-0", NATS: nc, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			shutdown(n)
			c.Registerer = reg
		}, "register metrics"},
		{"port taken", func(c *Config) { c.Listen = taken.Addr().String() }, "address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			n, err := New(cfg)
			if err == nil {
				shutdown(n)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// A New that failed to listen registered nothing: the registry takes
	// the same metrics again.
	reg := prometheus.NewRegistry()
	bad := good()
	bad.Listen, bad.Registerer = taken.Addr().String(), reg
	if _, err := New(bad); err == nil {
		t.Fatal("New on a taken port succeeded")
	}
	ok := good()
	ok.Registerer = reg
	n, err := New(ok)
	if err != nil {
		t.Fatalf("New with a good config: %v", err)
	}
	shutdown(n)
}
