package integration

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// collectRig is a Meridian cluster with one third-party gateway and a
// `meridian collect` child process beside it, and the running account of
// what loadgen was answered through the gateway.
type collectRig struct {
	t       *testing.T
	c       *cluster
	ctx     context.Context
	ws      *wsclient.Client
	region  string
	dir     string // the test's temporary directory
	addr    string // the gateway's listen address
	gwURL   string
	args    []string // collector arguments
	col     *proc
	admin   string // collector's admin address
	want    loadgen.Result
	regions *regionWatch
}

// newCollectRig starts a cluster for one gateway test with its own 4-minute
// deadline, temporary directory and free gateway address (r.dir, r.addr).
func newCollectRig(t *testing.T, region string) *collectRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	c := startCluster(t, clusterOptions{})
	r := &collectRig{t: t, c: c, ctx: ctx, region: region, dir: t.TempDir(), addr: freeAddr(t),
		want: loadgen.Result{ByStatus: map[int]uint64{}}}
	r.gwURL = "http://" + r.addr + "/"
	r.regions = watchRegion(t, c.nc, region)
	r.ws = c.dial(ctx)
	return r
}

// startCollector starts `meridian collect` with the rig's NATS and the
// given source flags, and waits until it runs.
func (r *collectRig) startCollector(args ...string) {
	r.t.Helper()
	if args != nil {
		r.admin = freeAddr(r.t)
		r.args = append([]string{"collect", "--region", r.region, "--instance", r.region + "-1",
			"--nats-url", r.c.node.ClientURL(), "--publish-interval", "100ms", "--admin-listen", r.admin}, args...)
	}
	r.col = startProc(r.t, nil, meridianBinary(r.t), r.args...)
	r.col.waitLine(30*time.Second, regexp.MustCompile(`collector running`))
}

// killCollector kills the collector with SIGKILL: no final report, no
// checkpoint beyond the last one.
func (r *collectRig) killCollector() {
	r.t.Helper()
	if err := r.col.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	r.col.wait(15 * time.Second)
}

// stopCollector stops the collector gracefully (final report).
func (r *collectRig) stopCollector() {
	r.t.Helper()
	if err := r.col.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	if err := r.col.wait(15 * time.Second); err != nil {
		r.t.Fatalf("collector exited with %v", err)
	}
}

// load sends n requests through the gateway: a share of them asking the
// demo upstream for a 500, and with path "?status=404" all 404s. It adds
// what loadgen was answered to the expected totals.
func (r *collectRig) load(n int, query string, errorRatio float64) {
	r.t.Helper()
	res := runLoad(r.t, r.ctx, loadgen.Config{
		Targets: []string{r.gwURL + query}, RPS: 500, Requests: n, ErrorRatio: errorRatio, Concurrency: 8,
	})
	r.add(res)
}

func (r *collectRig) add(res loadgen.Result) {
	r.want.Sent += res.Sent
	r.want.Succeeded += res.Succeeded
	r.want.Failed += res.Failed
	for s, n := range res.ByStatus {
		r.want.ByStatus[s] += n
	}
}

// check waits until the cluster totals over the WebSocket and the region's
// totals equal exactly what loadgen was answered.
func (r *collectRig) check(what string) {
	r.t.Helper()
	r.t.Logf("%s: expecting %d requests (%d 2xx/3xx, %d 4xx/5xx)", what, r.want.Sent, r.want.Succeeded, r.want.Failed)
	waitTotals(r.t, r.ctx, r.ws, r.want)
	r.regions.waitTotals(r.t, r.want)
}

// regionWatch follows one region's snapshots on NATS.
type regionWatch struct {
	mu   sync.Mutex
	last proto.Snapshot
	more chan struct{}
}

func watchRegion(t *testing.T, nc *nats.Conn, region string) *regionWatch {
	t.Helper()
	w := &regionWatch{more: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(proto.SnapshotSubjectPrefix+".region."+region, func(m *nats.Msg) {
		s, err := proto.DecodeSnapshot(m.Data)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.last = s
		w.mu.Unlock()
		select {
		case w.more <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return w
}

func (w *regionWatch) waitTotals(t *testing.T, want loadgen.Result) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		s := w.last
		w.mu.Unlock()
		if s.RequestsTotal > want.Sent {
			t.Fatalf("region %s counts %d requests, more than the %d sent", s.Scope.Name, s.RequestsTotal, want.Sent)
		}
		if s.RequestsTotal == want.Sent {
			if s.RequestsSuccess != want.Succeeded || s.RequestsError != want.Failed {
				t.Fatalf("region %s success/error = %d/%d, loadgen got %d/%d", s.Scope.Name, s.RequestsSuccess, s.RequestsError, want.Succeeded, want.Failed)
			}
			return
		}
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("region totals %d never reached %d", s.RequestsTotal, want.Sent)
		}
	}
}

// gatewayBinary returns the path of a gateway's executable, or skips the
// test when it is not installed (scripts/install-deps installs them).
func gatewayBinary(t *testing.T, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not installed (scripts/install-deps installs it): %v", path, err)
	}
	return path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatal(err)
	}
}

// copyTruncate rotates path the way logrotate's copytruncate does.
func copyTruncate(t *testing.T, path, to string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data))
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

// readPid reads a pid file, waiting for it to appear.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	wait.For(t, 20*time.Second, "pid file "+path, func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(strings.TrimSpace(string(data)), &pid)
		return err == nil && pid > 0
	})
	return pid
}

func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %d %v: %v", pid, sig, err)
	}
}

// waitHTTP waits until url answers (any status).
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	wait.For(t, 20*time.Second, url+" to answer", func() bool {
		resp, err := httpClient.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// metricValue reads one unlabelled or fully labelled sample from a
// Prometheus text page; NaN if it is absent.
func metricValue(t *testing.T, url, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(httpGet(t, url), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return math.NaN()
}

// gatewayProc is a third-party gateway run in the foreground by the test,
// in a process group of its own so that its worker processes go with it, and
// with its output in a file (a worker holding a pipe open would keep the
// test waiting).
type gatewayProc struct {
	t    *testing.T
	name string
	args []string
	env  []string
	out  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startGatewayProc(t *testing.T, env []string, name string, args ...string) *gatewayProc {
	t.Helper()
	g := &gatewayProc{t: t, name: name, args: args, env: env, out: filepath.Join(t.TempDir(), "output")}
	g.start()
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			out, _ := os.ReadFile(g.out)
			t.Logf("output of %s:\n%s", name, out)
		}
	})
	return g
}

func (g *gatewayProc) start() {
	g.t.Helper()
	f, err := os.OpenFile(g.out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		g.t.Fatal(err)
	}
	defer f.Close()
	g.cmd = exec.Command(g.name, g.args...)
	g.cmd.Env = append(os.Environ(), g.env...)
	g.cmd.Stdout, g.cmd.Stderr = f, f
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		g.t.Fatalf("start %s: %v", g.name, err)
	}
	g.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(g.cmd, g.done)
}

// stop ends the gateway with sig and waits for it.
func (g *gatewayProc) stop(sig syscall.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.t.Fatalf("%s did not exit on %v", g.name, sig)
	}
}

// kill ends the gateway's whole process group.
func (g *gatewayProc) kill() {
	select {
	case <-g.done:
	default:
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
	}
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL) // workers outliving their master
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// killCollectorUnderLoad sends n requests and, once the collector has
// counted some of them, kills it with SIGKILL and starts it again while the
// rest are still being sent.
func (r *collectRig) killCollectorUnderLoad(n int) {
	r.t.Helper()
	var res loadgen.Result
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = loadgen.Run(r.ctx, loadgen.Config{Targets: []string{r.gwURL}, RPS: 100, Requests: n, ErrorRatio: 0.1, Concurrency: 4})
	}()
	before := r.want.Sent
	wait.For(r.t, 30*time.Second, "the collector to publish some of the load", func() bool {
		r.regions.mu.Lock()
		defer r.regions.mu.Unlock()
		return r.regions.last.RequestsTotal > before
	})
	r.killCollector()
	r.startCollector()
	<-done
	if err != nil || res.TransportErrors != 0 || res.Sent != uint64(n) {
		r.t.Fatalf("load under the collector kill: %s, %v", res, err)
	}
	r.add(res)
}

// waitGateway waits until the gateway answers, counting the probes it
// answered in the expected totals (the gateway logs them like any request).
func (r *collectRig) waitGateway() {
	r.t.Helper()
	wait.For(r.t, 20*time.Second, r.gwURL+" to answer", func() bool {
		resp, err := httpClient.Get(r.gwURL)
		if err != nil {
			return false
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			r.t.Fatalf("probe %s: %v", r.gwURL, err)
		}
		res := loadgen.Result{Sent: 1, ByStatus: map[int]uint64{resp.StatusCode: 1}}
		if resp.StatusCode < 400 {
			res.Succeeded = 1
		} else {
			res.Failed = 1
		}
		r.add(res)
		return true
	})
}
