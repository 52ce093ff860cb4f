package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/proto"
)

// The Kairos guide's client examples, kept verbatim under testdata/, run
// against Meridian with only their URL changed, each for at least three of
// its intervals after its subscription took effect: a client written from
// the guide must keep working for as long as it runs, not just for the
// first Snapshot.

// guideURL is the URL every example in the guide connects to.
const guideURL = "ws://localhost:5900/ws/metrics"

// guideSource returns testdata/name with the guide's URL replaced by url.
func guideSource(t *testing.T, name, url string) string {
	t.Helper()
	src, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(src), guideURL) != 1 {
		t.Fatalf("testdata/%s no longer holds the guide's URL once", name)
	}
	return strings.Replace(string(src), guideURL, url, 1)
}

// requireTool skips the test when a tool the guide's example needs is
// missing, or fails it in CI, where scripts/install-deps installs it.
func requireTool(t *testing.T, pkg string, check *exec.Cmd) {
	t.Helper()
	if err := check.Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing; scripts/install-deps installs it: %v", pkg, err)
		}
		t.Skipf("%s is not installed (scripts/install-deps installs it): %v", pkg, err)
	}
}

// steadyLoad sends traffic through every gateway until the test ends, 13 %
// of it failing, so that every number a dashboard shows keeps changing.
func steadyLoad(t *testing.T, c *cluster) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := loadgen.Run(ctx, loadgen.Config{Targets: c.gatewayURLs(), RPS: 40, ErrorRatio: 0.13, Continuous: true})
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("load: %v", err)
		}
	})
}

// linesAfter returns the lines after the last one matching marker (all
// lines when none does).
func linesAfter(lines []string, marker *regexp.Regexp) []string {
	for i := len(lines) - 1; i >= 0; i-- {
		if marker.MatchString(lines[i]) {
			return lines[i+1:]
		}
	}
	return lines
}

// waitCount waits until n lines after marker match re, and returns the
// first submatch of each.
func (p *proc) waitCount(timeout time.Duration, marker, re *regexp.Regexp, n int) []string {
	p.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		lines := p.output()
		before := len(lines)
		var got []string
		for _, l := range linesAfter(lines, marker) {
			if m := re.FindStringSubmatch(l); m != nil {
				got = append(got, m[len(m)-1])
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-p.more:
		case <-p.done:
			if len(p.output()) == before {
				p.t.Fatalf("process exited (%v) with %d lines matching %s after the subscription, want %d", p.err, len(got), re, n)
			}
		case <-timer.C:
			p.t.Fatalf("%d lines matching %s after the subscription within %s, want %d", len(got), re, timeout, n)
		}
	}
}

// increasing checks that the decimal numbers in vs never decrease and
// change at least once.
func increasing(t *testing.T, what string, vs []string) {
	t.Helper()
	var prev float64
	for i, v := range vs {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%s %d is %q, not a number", what, i, v)
		}
		if i > 0 && f < prev {
			t.Fatalf("%s went down: %v", what, vs)
		}
		prev = f
	}
	if vs[0] == vs[len(vs)-1] {
		t.Errorf("%s did not change over %d snapshots under load: %v", what, len(vs), vs)
	}
}

// noProblem fails on any line the client prints for an error.
func noProblem(t *testing.T, p *proc, bad ...string) {
	t.Helper()
	for _, l := range p.output() {
		for _, b := range bad {
			if strings.Contains(l, b) {
				t.Fatalf("the client reported a problem: %q", l)
			}
		}
	}
}

// TestKairosGuidePythonClientUnchanged runs the guide's Python example: it
// subscribes to requests_total and success_rate every second with history.
func TestKairosGuidePythonClientUnchanged(t *testing.T) {
	python := "/usr/bin/python3"
	requireTool(t, "python3-websockets", exec.Command(python, "-c", "import websockets"))
	c := startCluster(t, clusterOptions{})
	steadyLoad(t, c)
	script := t.TempDir() + "/client.py"
	if err := os.WriteFile(script, []byte(guideSource(t, "kairos_python_client.py", c.wsURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, []string{"PYTHONUNBUFFERED=1"}, python, script)
	p.waitLine(15*time.Second, regexp.MustCompile(`^Historical requests_total: [1-9]\d* points$`))
	p.waitLine(5*time.Second, regexp.MustCompile(`^Historical success_rate: [1-9]\d* points$`))
	// The history comes right before the subscription takes effect.
	totals := p.waitCount(15*time.Second, regexp.MustCompile(`^Historical `),
		regexp.MustCompile(`^Total: (\d+), Success Rate: \d+\.\d\d%$`), 3)
	increasing(t, "requests_total", totals)
	noProblem(t, p, "Error:", "Traceback")
}

// TestKairosGuideNodeClientUnchanged runs the guide's Node.js example with
// Debian's node-ws: all metrics every 5 s with history.
func TestKairosGuideNodeClientUnchanged(t *testing.T) {
	env := []string{"NODE_PATH=/usr/share/nodejs"}
	check := exec.Command("node", "-e", "require('ws')")
	check.Env = append(os.Environ(), env...)
	requireTool(t, "node-ws", check)
	c := startCluster(t, clusterOptions{})
	steadyLoad(t, c)
	script := t.TempDir() + "/client.js"
	if err := os.WriteFile(script, []byte(guideSource(t, "kairos_node_client.js", c.wsURL)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, env, "node", script)
	p.waitLine(10*time.Second, regexp.MustCompile(`^Connected to metrics stream$`))
	// One TimeSeries per guide metric: "metrics: []" means the guide's six.
	for _, m := range proto.GuideMetrics.Metrics() {
		p.waitLine(15*time.Second, regexp.MustCompile(`^`+m.String()+`: [1-9]\d* data points$`))
	}
	// console.log of the object prints one field per line (or all on one
	// line when short); every field must be a number, never undefined.
	afterHistory := regexp.MustCompile(`^success_rate: \d+ data points$`)
	requests := p.waitCount(30*time.Second, afterHistory, regexp.MustCompile(`\brequests: (\d+)`), 3)
	increasing(t, "requests", requests)
	errs := p.waitCount(time.Second, afterHistory, regexp.MustCompile(`\berrors: (\d+)`), 3)
	increasing(t, "errors", errs)
	p.waitCount(time.Second, afterHistory, regexp.MustCompile(`\bactive: (\d+)`), 3)
	p.waitCount(time.Second, afterHistory, regexp.MustCompile(`\btimestamp: '(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)'`), 3)
	noProblem(t, p, "undefined", "Server error", "WebSocket error", "Connection closed")
}

// TestKairosGuideRustClientLogic emulates the guide's Rust example
// (tokio-tungstenite and serde_json), since crates cannot be fetched here:
// it sends the subscription written in testdata/kairos_rust_client.rs —
// requests_total and the alias response_time_avg, every 2 s — and, like the
// example, reads each event as an untyped JSON value and prints
// requests_total and success_rate, which serde_json shows as null when
// absent.
func TestKairosGuideRustClientLogic(t *testing.T) {
	c := startCluster(t, clusterOptions{})
	steadyLoad(t, c)
	src := guideSource(t, "kairos_rust_client.rs", c.wsURL)
	m := regexp.MustCompile(`(?s)let subscription = json!\((\{.*?\})\);`).FindStringSubmatch(src)
	if m == nil {
		t.Fatal("no subscription in testdata/kairos_rust_client.rs")
	}
	var sub map[string]any
	if err := json.Unmarshal([]byte(m[1]), &sub); err != nil {
		t.Fatalf("the Rust example's subscription is not JSON: %v", err)
	}
	interval := time.Duration(sub["interval_seconds"].(float64)) * time.Second

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := c.dial(ctx)
	if err := ws.Subscribe(ctx, sub); err != nil {
		t.Fatal(err)
	}
	// serde_json's Display of a Value: JSON text, "null" when missing.
	show := func(ev map[string]json.RawMessage, k string) string {
		if v, ok := ev[k]; ok {
			return string(v)
		}
		return "null"
	}
	var lines []string
	var arrivals []time.Time
	for len(arrivals) < 4 { // the one on connect, then three intervals
		data, err := ws.NextRaw(ctx)
		if err != nil {
			t.Fatalf("after %d snapshots: %v", len(arrivals), err)
		}
		var ev map[string]json.RawMessage
		if err := json.Unmarshal(data, &ev); err != nil {
			t.Fatalf("Failed to parse JSON: %v (%q)", err, data)
		}
		switch show(ev, "type") {
		case `"Snapshot"`:
			lines = append(lines, fmt.Sprintf("Metrics - Total: %s, Success Rate: %s%%", show(ev, "requests_total"), show(ev, "success_rate")))
			arrivals = append(arrivals, time.Now())
		case `"Error"`:
			t.Fatalf("Error: %s", show(ev, "message"))
		}
	}
	line := regexp.MustCompile(`^Metrics - Total: (\d+), Success Rate: (\d+(\.\d+)?)%$`)
	var totals []string
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("printed %q; want numbers for both", l)
		}
		totals = append(totals, m[1])
	}
	increasing(t, "requests_total", totals[1:])
	// Generous bounds: the edge keeps the cadence, the loaded machine may not.
	for i := 2; i < len(arrivals); i++ {
		if d := arrivals[i].Sub(arrivals[i-1]); d < interval/2 || d > interval*2 {
			t.Errorf("snapshots %s apart, want the subscribed %s", d, interval)
		}
	}
}
