package integration

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCollectApacheAccessLogIsExact runs Debian's Apache (event MPM,
// mod_proxy) in the foreground in front of the demo upstream, logging
// %>s and %D, with `meridian collect` tailing the log: totals exact across
// rotation by rename with a graceful restart (its reopen), copytruncate, a
// restart, a collector kill -9 under load and an unparseable line.
func TestCollectApacheAccessLogIsExact(t *testing.T) {
	apache := gatewayBinary(t, "/usr/sbin/apache2")
	r := newCollectRig(t, "apache")
	dir, addr := r.dir, r.addr
	log := filepath.Join(dir, "access.log")

	conf := filepath.Join(dir, "httpd.conf")
	mods := "/usr/lib/apache2/modules"
	writeFile(t, conf, fmt.Sprintf(`ServerRoot %[1]s
PidFile %[1]s/httpd.pid
Mutex file:%[1]s default
Listen %[2]s
ServerName localhost
User nobody
Group nogroup
ErrorLog %[1]s/error.log
LoadModule mpm_event_module %[4]s/mod_mpm_event.so
LoadModule authz_core_module %[4]s/mod_authz_core.so
LoadModule proxy_module %[4]s/mod_proxy.so
LoadModule proxy_http_module %[4]s/mod_proxy_http.so
LogFormat "%%h %%l %%u %%t \"%%r\" %%>s %%b %%D" meridian
CustomLog %[1]s/access.log meridian
ProxyPass / %[3]s/
`, dir, addr, r.c.upstream.String(), mods))
	gw := startGatewayProc(t, nil, apache, "-DFOREGROUND", "-f", conf)
	waitHTTP(t, r.gwURL)

	r.startCollector("--access-log", log, "--access-log-format", "apache",
		"--checkpoint", filepath.Join(dir, "collect.checkpoint"), "--poll-interval", "50ms", "--rotate-wait", "1s")
	r.load(200, "", 0.1)
	r.load(30, "?status=404", 0)
	r.check("plain traffic")

	rename(t, log, log+".1")
	r.load(40, "", 0.2)
	signal(t, gw.cmd.Process.Pid, syscall.SIGUSR1) // graceful restart: reopens the logs
	r.waitGateway()
	r.load(40, "", 0.2)
	r.check("rotation by rename and graceful restart")

	copyTruncate(t, log, log+".2")
	r.load(40, "?status=404", 0)
	r.check("copytruncate")

	gw.stop(syscall.SIGTERM)
	gw.start()
	r.waitGateway()
	r.load(40, "", 0.1)
	r.check("restart")

	r.killCollectorUnderLoad(200)
	r.check("collector kill -9 and restart")

	appendLine(t, log, "not an apache log line")
	r.load(20, "", 0)
	r.check("an unparseable line")
	if got := metricValue(t, "http://"+r.admin+"/metrics", `meridian_collector_lines_total{result="unparseable"}`); got != 1 {
		t.Errorf("unparseable lines metric = %v, want 1", got)
	}
	r.stopCollector()
}
