package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/integration/wait"
)

// haproxyConfig writes a config for HAProxy in front of the upstream, with
// its HTTP log (option httplog) sent to logTarget and its
// Prometheus exporter on a frontend of its own. http-ignore-probes and
// dontlognull keep connections that never carried a request (an HTTP
// client's spare pre-dialled connection) out of the counts and the log:
// they are not requests, and no client saw a response.
func haproxyConfig(t *testing.T, dir, addr, promAddr, upstream, logTarget string) string {
	t.Helper()
	conf := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, conf, fmt.Sprintf(`global
  pidfile %[1]s/haproxy.pid
  log %[5]s local0
defaults
  mode http
  log global
  option httplog
  option dontlognull
  option http-ignore-probes
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind %[2]s
  default_backend be
frontend prom
  bind %[3]s
  http-request use-service prometheus-exporter if { path /metrics }
backend be
  server s1 %[4]s
`, dir, addr, promAddr, upstream, logTarget))
	return conf
}

// TestCollectHAProxySyslogIsExact runs Debian's HAProxy (master-worker, in
// the foreground) logging to `meridian collect --syslog-listen` over UDP on
// loopback (a unix datagram socket queues only net.unix.max_dgram_qlen
// messages, 10 here, and HAProxy drops the rest of a burst): totals exact across a reload, a restart, an unparseable
// message and a collector kill -9 and restart while no traffic flows
// (datagrams sent while no collector listens are lost; the README says so).
func TestCollectHAProxySyslogIsExact(t *testing.T) {
	haproxy := gatewayBinary(t, "/usr/sbin/haproxy")
	r := newCollectRig(t, "haproxy")
	dir, addr := r.dir, r.addr
	promAddr := freeAddr(t)
	syslogAddr := freeUDPAddr(t)

	r.startCollector("--syslog-listen", "udp://"+syslogAddr, "--access-log-format", "haproxy",
		"--checkpoint", filepath.Join(dir, "collect.checkpoint"))
	conf := haproxyConfig(t, dir, addr, promAddr, r.c.upstream.Host, syslogAddr)
	gw := startGatewayProc(t, nil, haproxy, "-W", "-db", "-f", conf)
	r.waitGateway()

	r.load(300, "", 0.1)
	r.load(40, "?status=404", 0)
	r.check("plain traffic")

	signal(t, gw.cmd.Process.Pid, syscall.SIGUSR2) // master-worker reload
	r.waitGateway()
	r.load(60, "", 0.3)
	r.check("reload")

	gw.stop(syscall.SIGTERM)
	gw.start()
	r.waitGateway()
	r.load(60, "", 0.1)
	r.check("restart")

	r.killCollector()
	r.startCollector()
	r.load(60, "?status=404", 0)
	r.check("collector kill -9 and restart")

	c, err := net.Dial("udp", syslogAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("<134>Dec  3 13:00:00 haproxy[1]: Proxy fe started.")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r.load(20, "", 0)
	r.check("an unparseable message")
	wait.For(t, 10*time.Second, "the unparseable message to be counted", func() bool {
		return metricValue(t, "http://"+r.admin+"/metrics", `meridian_collector_lines_total{result="unparseable"}`) == 1
	})
	r.stopCollector()
}

// TestCollectHAProxyExporterIsExact scrapes HAProxy's built-in Prometheus
// exporter with the haproxy profile: response counts by class are exact, a
// HAProxy restart (its counters back to zero) becomes a new boot whose
// counts add to the totals, and a collector kill -9 under load neither
// loses nor double counts.
func TestCollectHAProxyExporterIsExact(t *testing.T) {
	haproxy := gatewayBinary(t, "/usr/sbin/haproxy")
	r := newCollectRig(t, "haproxyprom")
	dir, addr := r.dir, r.addr
	promAddr := freeAddr(t)

	conf := haproxyConfig(t, dir, addr, promAddr, r.c.upstream.Host, freeUDPAddr(t)) // nobody listens
	gw := startGatewayProc(t, nil, haproxy, "-W", "-db", "-f", conf)
	waitHTTP(t, "http://"+promAddr+"/metrics")
	r.startCollector("--scrape-url", "http://"+promAddr+"/metrics", "--profile", "haproxy",
		"--scrape-match", "proxy=fe", "--scrape-interval", "100ms", "--checkpoint", filepath.Join(dir, "collect.checkpoint"))

	r.load(300, "", 0.1)
	r.load(40, "?status=404", 0)
	r.check("plain traffic")

	gw.stop(syscall.SIGTERM)
	gw.start()
	r.waitGateway()
	r.load(60, "", 0.2)
	r.check("restart (counter reset)")

	r.killCollectorUnderLoad(200)
	r.check("collector kill -9 under load")
	r.stopCollector()
}

// freeUDPAddr returns a 127.0.0.1 UDP address nothing is bound to now (the
// collector binds it after HAProxy's config names it).
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}
