package integration

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevCommand runs the README's run command (on free ports) as a newcomer
// would, watches it with `meridian watch`, and stops it with Ctrl-C.
func TestDevCommand(t *testing.T) {
	bin := meridianBinary(t)
	dev := startProc(t, nil, bin, "dev",
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--gateways", "eu=127.0.0.1:0,us=127.0.0.1:0", "--data-dir", t.TempDir(), "--demo-rps", "50")
	m := dev.waitLine(30*time.Second, regexp.MustCompile(`live metrics \(WebSocket\)\s+(ws://\S+)`))
	wsURL := m[1]
	dash := dev.waitLine(5*time.Second, regexp.MustCompile(`dashboard\s+(http://\S+/)$`))[1]
	if body := httpGet(t, dash); !strings.Contains(body, "<title>Meridian</title>") {
		t.Errorf("the dashboard URL %s in the banner does not serve the dashboard", dash)
	}

	// Numbers move: three snapshots with a growing total.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "watch", "--count", "4", wsURL).CombinedOutput()
	if err != nil {
		t.Fatalf("meridian watch: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`total=(\d+)\s+success=(\d+)\s+error=(\d+)`)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 {
		t.Fatalf("watch printed %d lines, want 4:\n%s", len(lines), out)
	}
	first, last := re.FindStringSubmatch(lines[0]), re.FindStringSubmatch(lines[3])
	if first == nil || last == nil {
		t.Fatalf("watch lines lack totals:\n%s", out)
	}
	if a, b := atoi(t, first[1]), atoi(t, last[1]); b <= a {
		t.Fatalf("totals do not move with demo load (%d then %d):\n%s", a, b, out)
	}

	// The demo load's errors reach both regions, as real traffic would.
	for _, region := range []string{"eu", "us"} {
		out, err := exec.CommandContext(ctx, bin, "watch", "--count", "1", wsURL+"?region="+region).CombinedOutput()
		if err != nil {
			t.Fatalf("meridian watch ?region=%s: %v\n%s", region, err, out)
		}
		m := re.FindStringSubmatch(string(out))
		if m == nil || atoi(t, m[1]) == 0 || atoi(t, m[3]) == 0 {
			t.Errorf("region %s shows no demo errors (or no requests): %s", region, out)
		}
	}

	// /metrics of every role and /metrics/gateways are on the same port.
	httpBase := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws/metrics")
	for path, want := range map[string]string{
		"/metrics":          "meridian_proxy_requests_total",
		"/metrics/gateways": `meridian_gateway_requests_total{instance="gw-eu-1",region="eu"}`,
		"/readyz":           "ready",
		"/healthz":          "ok",
		"/api/metrics/list": `"scopes":["cluster"`,
		"/api/metrics/history?metric=requests_total&step=1s": `"data_points":[{`,
	} {
		body := httpGet(t, httpBase+path)
		if !strings.Contains(body, want) {
			t.Errorf("GET %s lacks %q", path, want)
		}
	}

	start := time.Now()
	if err := dev.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := dev.wait(10 * time.Second); err != nil {
		t.Fatalf("meridian dev exited with %v after Ctrl-C", err)
	}
	t.Logf("meridian dev stopped %v after Ctrl-C", time.Since(start).Round(time.Millisecond))
}

func TestWatchFailsClearlyWithoutAnEdge(t *testing.T) {
	bin := meridianBinary(t)
	out, err := exec.Command(bin, "watch", "--reconnect-timeout", "500ms", "ws://127.0.0.1:1/ws/metrics").CombinedOutput()
	var ee *exec.ExitError
	if err == nil || !errorAs(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("watch without an edge: err %v, output %s", err, out)
	}
	if !strings.Contains(string(out), "cannot connect to ws://127.0.0.1:1/ws/metrics") {
		t.Fatalf("unclear message: %s", out)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
