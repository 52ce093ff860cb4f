package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
)

// TestCollectCaddyAccessLogIsExact runs Debian's Caddy in front of the demo
// upstream with its JSON access log tailed by `meridian collect`: totals
// exact across copytruncate (Caddy rolls its own logs by rename, which the
// nginx and Apache tests cover), a forced config reload, a restart, a
// collector kill -9 under load and an unparseable line.
func TestCollectCaddyAccessLogIsExact(t *testing.T) {
	caddy := gatewayBinary(t, "/usr/bin/caddy")
	r := newCollectRig(t, "caddy")
	dir, addr, ctx := r.dir, r.addr, r.ctx
	admin := freeAddr(t)
	log := filepath.Join(dir, "access.log")

	conf := filepath.Join(dir, "Caddyfile")
	writeFile(t, conf, fmt.Sprintf(`{
	admin %[2]s
}
http://%[3]s {
	reverse_proxy %[4]s
	log {
		output file %[1]s/access.log {
			roll_disabled
		}
		format json
	}
}
`, dir, admin, addr, r.c.upstream.Host))
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	gw := startGatewayProc(t, env, caddy, "run", "--config", conf, "--adapter", "caddyfile")
	r.waitGateway()

	r.startCollector("--access-log", log, "--access-log-format", "caddy",
		"--checkpoint", filepath.Join(dir, "collect.checkpoint"), "--poll-interval", "50ms", "--rotate-wait", "1s")
	// The probe before the collector started is in the log already; the
	// collector starts at the end of an existing log.
	r.want = loadgen.Result{ByStatus: map[int]uint64{}}
	r.load(200, "", 0.1)
	r.load(30, "?status=404", 0)
	r.check("plain traffic")

	copyTruncate(t, log, log+".1")
	r.load(40, "", 0.2)
	r.check("copytruncate")

	reload := exec.CommandContext(ctx, caddy, "reload", "--force", "--config", conf, "--adapter", "caddyfile", "--address", admin)
	reload.Env = append(reload.Environ(), env...)
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
	r.load(40, "", 0.3)
	r.check("reload")

	gw.stop(syscall.SIGTERM)
	gw.start()
	r.waitGateway()
	r.load(40, "", 0.1)
	r.check("restart")

	r.killCollectorUnderLoad(200)
	r.check("collector kill -9 and restart")

	appendLine(t, log, `{"level":"info","msg":"not an access log entry"}`)
	r.load(20, "", 0)
	r.check("an unparseable line")
	if got := metricValue(t, "http://"+r.admin+"/metrics", `meridian_collector_lines_total{result="unparseable"}`); got != 1 {
		t.Errorf("unparseable lines metric = %v, want 1", got)
	}
	r.stopCollector()
}
