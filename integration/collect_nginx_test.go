package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meridian-metrics/meridian/collector"
)

// TestCollectNginxAccessLogIsExact runs Debian's nginx in front of the demo
// upstream with `meridian collect` tailing its access log, and checks over a
// real WebSocket that the cluster and region totals equal what loadgen was
// answered, across rotation by rename (USR1 reopen) and by copytruncate, a
// reload, a restart, a collector kill -9 under load and an unparseable line;
// and that nginx's JSON log of the same requests reads to the same counts.
func TestCollectNginxAccessLogIsExact(t *testing.T) {
	nginx := gatewayBinary(t, "/usr/sbin/nginx")
	r := newCollectRig(t, "nginx")
	dir, addr := r.dir, r.addr
	statusAddr := freeAddr(t)
	log := filepath.Join(dir, "access.log")
	pidFile := filepath.Join(dir, "nginx.pid")

	conf := filepath.Join(dir, "nginx.conf")
	writeFile(t, conf, fmt.Sprintf(`daemon off;
user root;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  log_format meridian '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time';
  log_format meridianjson escape=json '{"time":"$time_iso8601","status":"$status","request_time":"$request_time"}';
  server {
    listen %[2]s;
    access_log %[1]s/access.log meridian;
    access_log %[1]s/access.json meridianjson;
    location / { proxy_pass %[3]s; }
  }
  server {
    listen %[4]s;
    access_log off;
    location = /stub_status { stub_status; }
  }
}
`, dir, addr, r.c.upstream.String(), statusAddr))
	gw := startGatewayProc(t, nil, nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
	waitHTTP(t, "http://"+statusAddr+"/stub_status")

	r.startCollector("--access-log", log, "--access-log-format", "nginx-combined",
		"--checkpoint", filepath.Join(dir, "collect.checkpoint"), "--poll-interval", "50ms", "--rotate-wait", "1s",
		"--stub-status", "http://"+statusAddr+"/stub_status")

	r.load(300, "", 0.1)
	r.load(40, "?status=404", 0)
	r.check("plain traffic")

	// Rotation by rename, then the reopen signal logrotate's postrotate
	// sends; traffic between the rename and the reopen goes to the old file.
	rename(t, log, log+".1")
	r.load(50, "", 0.2)
	signal(t, readPid(t, pidFile), syscall.SIGUSR1)
	r.load(50, "", 0.2)
	r.check("rotation by rename")

	copyTruncate(t, log, log+".2")
	r.load(60, "?status=404", 0)
	r.check("copytruncate")

	signal(t, readPid(t, pidFile), syscall.SIGHUP) // reload
	r.load(60, "", 0.5)
	r.check("reload")

	gw.stop(syscall.SIGQUIT) // graceful stop, then a new nginx
	gw.start()
	waitHTTP(t, "http://"+statusAddr+"/stub_status")
	r.load(60, "", 0.1)
	r.check("restart")

	// kill -9 the collector while traffic flows, restart it.
	r.killCollectorUnderLoad(300)
	r.check("collector kill -9 and restart")

	appendLine(t, log, "this line is not in the meridian log_format")
	r.load(30, "", 0)
	r.check("an unparseable line")
	if got := metricValue(t, "http://"+r.admin+"/metrics", `meridian_collector_lines_total{result="unparseable"}`); got != 1 {
		t.Errorf("unparseable lines metric = %v, want 1", got)
	}
	r.stopCollector()

	// The same requests in nginx's JSON log (escape=json) read with the
	// nginx-json format: exactly what loadgen was answered.
	p, err := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxJSON})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "access.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ok, bad uint64
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		e, err := p.ParseLine([]byte(line))
		if err != nil {
			t.Fatalf("nginx JSON line %q: %v", line, err)
		}
		if e.Status < 400 {
			ok++
		} else {
			bad++
		}
	}
	if ok != r.want.Succeeded || bad != r.want.Failed {
		t.Errorf("nginx JSON log holds %d/%d successes/errors, loadgen got %d/%d", ok, bad, r.want.Succeeded, r.want.Failed)
	}
	if !strings.Contains(strings.Join(r.col.output(), "\n"), "skipping an unparseable line") {
		t.Error("the unparseable line was not logged")
	}
}
