package integration

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKairosGuidePythonClientUnchanged runs the Python example from the
// Kairos guide, with only its URL changed, against Meridian.
func TestKairosGuidePythonClientUnchanged(t *testing.T) {
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import websockets").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3-websockets is missing; scripts/install-deps installs it: %v", err)
		}
		t.Skip("python3-websockets not installed (scripts/install-deps installs it)")
	}
	c := startCluster(t, clusterOptions{})
	src, err := os.ReadFile("testdata/kairos_python_client.py")
	if err != nil {
		t.Fatal(err)
	}
	const guideURL = "ws://localhost:5900/ws/metrics"
	if !strings.Contains(string(src), guideURL) {
		t.Fatal("the client no longer holds the guide's URL")
	}
	script := t.TempDir() + "/client.py"
	if err := os.WriteFile(script, []byte(strings.Replace(string(src), guideURL, c.wsURL, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, []string{"PYTHONUNBUFFERED=1"}, python, script)
	p.waitLine(15*time.Second, regexp.MustCompile(`^Historical requests_total: [1-9]\d* points$`))
	p.waitLine(5*time.Second, regexp.MustCompile(`^Historical success_rate: [1-9]\d* points$`))
	snap := regexp.MustCompile(`^Total: \d+, Success Rate: \d+\.\d\d%$`)
	deadline := time.Now().Add(10 * time.Second)
	for p.countLines(snap) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the client printed %d snapshot lines, want 3", p.countLines(snap))
		}
		p.waitLine(5*time.Second, snap)
		time.Sleep(50 * time.Millisecond) // polling a condition; the waitLine above blocks on output
	}
	for _, l := range p.output() {
		if strings.HasPrefix(l, "Error:") || strings.Contains(l, "Traceback") {
			t.Fatalf("the client reported a problem: %q", l)
		}
	}
}
