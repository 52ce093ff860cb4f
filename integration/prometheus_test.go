package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/gateway/loadgen"
)

// TestPrometheusScrapesMeridian runs a real Prometheus server against the
// `meridian dev` binary, with the repository's recording and alerting rules
// (deploy/prometheus/rules) loaded, drives known traffic through each region's
// gateway and checks what PromQL answers: the relayed gateway counters equal
// exactly what the load generator sent, per region and per instance; rates are
// positive; the recorded series equal the ratios that were sent; exactly the
// alerts the traffic calls for are pending; every rule evaluates without error;
// and every metric name the rules and the Grafana dashboard use exists.
func TestPrometheusScrapesMeridian(t *testing.T) {
	promBin := prometheusBinary(t)
	dev := startDev(t)
	metricsAddr, euURL, usURL := dev.metricsAddr, dev.euURL, dev.usURL

	start := time.Now()
	prom := startPrometheus(t, promBin, metricsAddr)
	t.Logf("prometheus ready in %v", time.Since(start).Round(time.Millisecond))

	// Both gateway series are scraped at 0 before any traffic, so that every
	// request sent is an increase Prometheus sees, and both scrape jobs work.
	// This is the longest wait of the test: Prometheus applies its scrape
	// targets about 5s after it starts (its discovery updates are throttled
	// to one per 5s, static ones included).
	prom.waitFor(30*time.Second, "both relayed gateway series at 0 and both targets up",
		`meridian_gateway_requests_total or up`, func(r promResult) bool {
			return r.value(`instance="gw-eu-1"`) == 0 && r.value(`instance="gw-us-1"`) == 0 &&
				r.value(`__name__="up",job="meridian"`) == 1 && r.value(`__name__="up",job="gateways"`) == 1
		})

	// Known traffic: the error ratio is exact (request k asks for an error
	// when floor(k*ratio) grows), so eu gets 75 errors and us 6.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	eu := runLoad(t, ctx, loadgen.Config{Targets: []string{euURL}, RPS: 300, Requests: 300, ErrorRatio: 0.25})
	us := runLoad(t, ctx, loadgen.Config{Targets: []string{usURL}, RPS: 300, Requests: 150, ErrorRatio: 0.04})
	if eu.Failed != 75 || us.Failed != 6 {
		t.Fatalf("load generator failures eu=%d us=%d, want 75 and 6", eu.Failed, us.Failed)
	}
	loaded := time.Now()
	sent := map[string]float64{"eu": float64(eu.Sent), "us": float64(us.Sent)}
	failed := map[string]float64{"eu": float64(eu.Failed), "us": float64(us.Failed)}

	// Totals per region, once Prometheus has the final reports; they must
	// never overshoot on the way.
	prom.waitFor(30*time.Second, "per-region totals equal to the requests sent",
		`sum by (region) (meridian_gateway_requests_total)`, func(r promResult) bool {
			for region, n := range sent {
				if got := r.value(`region="` + region + `"`); got > n {
					t.Fatalf("Prometheus has %v requests for region %s, more than the %v sent", got, region, n)
				}
			}
			return len(r) == 2 && r.value(`region="eu"`) == sent["eu"] && r.value(`region="us"`) == sent["us"]
		})
	t.Logf("prometheus had the final totals %v after the load ended", time.Since(loaded).Round(time.Millisecond))

	// Exact counters, per instance and per region, from the same final
	// reports: a report carries all of an instance's counters at once.
	for _, tc := range []struct {
		query string
		want  map[string]float64 // by the label selector of each expected series
	}{
		{`meridian_gateway_request_errors_total{instance="gw-eu-1"}`, map[string]float64{`region="eu"`: failed["eu"]}},
		{`meridian_gateway_request_errors_total{instance="gw-us-1"}`, map[string]float64{`region="us"`: failed["us"]}},
		{`sum by (region) (meridian_gateway_request_errors_total)`, map[string]float64{`region="eu"`: failed["eu"], `region="us"`: failed["us"]}},
		{`sum by (region) (meridian_gateway_request_duration_seconds_count)`, map[string]float64{`region="eu"`: sent["eu"], `region="us"`: sent["us"]}},
		{`sum by (region) (meridian_gateway_request_duration_seconds_bucket{le="+Inf"})`, map[string]float64{`region="eu"`: sent["eu"], `region="us"`: sent["us"]}},
		{`meridian_gateway_up`, map[string]float64{`instance="gw-eu-1"`: 1, `instance="gw-us-1"`: 1}},
	} {
		r := prom.query(tc.query)
		if len(r) != len(tc.want) {
			t.Errorf("%s: %d series, want %d: %s", tc.query, len(r), len(tc.want), r)
		}
		for sel, want := range tc.want {
			if got := r.value(sel); got != want {
				t.Errorf("%s{%s} = %v, want %v", tc.query, sel, got, want)
			}
		}
	}

	// The gateways' own /metrics (job="meridian"; their instance label is
	// exported_instance there, the target's own instance taking precedence)
	// agree with the relay.
	prom.waitFor(10*time.Second, "the gateways' own counters equal the relayed ones",
		`sum by (region) (meridian_proxy_requests_total) or sum by (region) (label_replace(meridian_proxy_requests_total{code=~"4xx|5xx"}, "region", "$1-errors", "region", "(.*)"))`,
		func(r promResult) bool {
			return r.value(`region="eu"`) == sent["eu"] && r.value(`region="us"`) == sent["us"] &&
				r.value(`region="eu-errors"`) == failed["eu"] && r.value(`region="us-errors"`) == failed["us"]
		})

	r := prom.query(`sum by (region) (rate(meridian_gateway_requests_total[1m]))`)
	for _, region := range []string{"eu", "us"} {
		if got := r.value(`region="` + region + `"`); !(got > 0) {
			t.Errorf("rate of requests in %s = %v, want > 0: %s", region, got, r)
		}
	}

	// Recording rules. Within one instance, requests and errors come from the
	// same scrapes, so rate() extrapolates both alike and their ratio is the
	// exact ratio sent. Across instances the extrapolation can differ by the
	// scrape at which each series appeared, hence a tolerance for the cluster.
	clusterRatio := (failed["eu"] + failed["us"]) / (sent["eu"] + sent["us"])
	for _, tc := range []struct {
		query, sel string
		want, tol  float64
	}{
		{"instance:meridian_gateway_request_errors_per_requests:ratio_rate1m", `instance="gw-eu-1"`, 0.25, 1e-9},
		{"region:meridian_gateway_request_errors_per_requests:ratio_rate1m", `region="eu"`, 0.25, 1e-9},
		{"region:meridian_gateway_request_errors_per_requests:ratio_rate1m", `region="us"`, 0.04, 1e-9},
		{"region:meridian_gateway_request_errors_per_requests:ratio_rate5m", `region="us"`, 0.04, 1e-9},
		{"cluster:meridian_gateway_request_errors_per_requests:ratio_rate1m", ``, clusterRatio, 0.002},
	} {
		prom.waitFor(15*time.Second, fmt.Sprintf("%s{%s} ≈ %v", tc.query, tc.sel, tc.want), tc.query,
			func(r promResult) bool { return math.Abs(r.value(tc.sel)-tc.want) <= tc.tol })
	}
	for _, region := range []string{"eu", "us"} {
		sel := `region="` + region + `"`
		if got := prom.query("region:meridian_gateway_requests:rate1m").value(sel); !(got > 0) {
			t.Errorf("region:meridian_gateway_requests:rate1m{%s} = %v, want > 0", sel, got)
		}
		// Mean latency over the window equals the mean since the boot here,
		// all traffic being inside the window.
		mean := prom.query("region:meridian_gateway_request_duration_seconds:mean1m").value(sel)
		want := prom.query(`sum by (region) (meridian_gateway_request_duration_seconds_sum) / sum by (region) (meridian_gateway_request_duration_seconds_count)`).value(sel)
		if !(want > 0) || math.Abs(mean-want) > 1e-9*want {
			t.Errorf("region:meridian_gateway_request_duration_seconds:mean1m{%s} = %v, want the mean latency %v", sel, mean, want)
		}
		p99 := prom.query("region:meridian_gateway_request_duration_seconds:p99_rate1m").value(sel)
		wantP99 := prom.query(`histogram_quantile(0.99, sum by (region, le) (meridian_gateway_request_duration_seconds_bucket))`).value(sel)
		if !(wantP99 > 0) || math.Abs(p99-wantP99) > 1e-9*wantP99 {
			t.Errorf("region:meridian_gateway_request_duration_seconds:p99_rate1m{%s} = %v, want %v", sel, p99, wantP99)
		}
	}

	// Alerts: eu's errors (25%) are above both the region (10%) and the
	// instance (20%) thresholds, us's (4%) above neither; with `for: 5m` the
	// two alerts are pending. Nothing else is pending or firing in a healthy
	// cluster.
	wantAlerts := []string{
		`MeridianGatewayErrorRatioHigh pending instance=gw-eu-1 region=eu`,
		`MeridianRegionErrorRatioHigh pending region=eu`,
	}
	prom.waitFor(15*time.Second, "exactly the error-ratio alerts for eu pending", `ALERTS`, func(r promResult) bool {
		var got []string
		for _, s := range r {
			a := s.Metric["alertname"] + " " + s.Metric["alertstate"]
			for _, l := range []string{"instance", "region"} {
				if v, ok := s.Metric[l]; ok {
					a += " " + l + "=" + v
				}
			}
			got = append(got, a)
		}
		slices.Sort(got)
		return slices.Equal(got, wantAlerts)
	})

	t.Logf("recorded series and alerts matched %v after the load ended", time.Since(loaded).Round(time.Millisecond))

	// Every rule group loaded and evaluates without error against the real
	// exposition (no many-to-many matches, no bad label joins).
	prom.checkRulesHealthy(ruleGroupNames(t))

	// Every metric the rules and the dashboard refer to exists, and every
	// recording rule produces a series.
	names := prom.metricNames()
	for _, name := range referencedMetricNames(t) {
		if !names[name] {
			t.Errorf("%s is used by deploy/ but not exported by any role of `meridian dev`", name)
		}
	}
}

// devURLs are the endpoints of a `meridian dev` child process.
type devURLs struct {
	metricsAddr  string // host:port of /metrics and /metrics/gateways
	wsURL        string // /ws/metrics
	euURL, usURL string // the gateways gw-eu-1 and gw-us-1
}

// startDev runs `meridian dev` on free ports without demo load, so every
// request is one the test sent; it is stopped at cleanup.
func startDev(t *testing.T) devURLs {
	t.Helper()
	dev := startProc(t, nil, meridianBinary(t), "dev",
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--gateways", "eu=127.0.0.1:0,us=127.0.0.1:0", "--data-dir", t.TempDir(), "--demo-rps", "0")
	var u devURLs
	u.wsURL = dev.waitLine(30*time.Second, regexp.MustCompile(`live metrics \(WebSocket\)\s+(\S+)`))[1]
	u.metricsAddr = dev.waitLine(30*time.Second, regexp.MustCompile(`prometheus\s+http://(\S+)/metrics`))[1]
	gatewayURL := func(instance, region string) string {
		re := regexp.MustCompile(`gateway ` + instance + `\s+(http://\S+)\s+\(region ` + region + `\)`)
		return dev.waitLine(10*time.Second, re)[1]
	}
	u.euURL, u.usURL = gatewayURL("gw-eu-1", "eu"), gatewayURL("gw-us-1", "us")
	return u
}

// prometheusBinary finds the Prometheus server scripts/install-deps installs.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is not installed; scripts/install-deps installs it: %v", err)
		}
		t.Skip("prometheus not installed (scripts/install-deps installs it)")
	}
	return path
}

// repoPath is a path in the repository, wherever the test runs from.
func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), ".."}, parts...)...)
}

// promServer is a Prometheus child process and a client for its HTTP API.
type promServer struct {
	t      *testing.T
	base   string
	client *http.Client
}

// startPrometheus runs Prometheus on a free port with a scrape interval of
// 1s, scraping a `meridian dev` at addr the way deploy/prometheus/prometheus.yml
// scrapes the standalone roles: /metrics as a plain job, /metrics/gateways
// with honor_labels, and the repository's rule files. It is killed at
// cleanup.
func startPrometheus(t *testing.T, bin, addr string) *promServer {
	t.Helper()
	return startPrometheusWith(t, bin, addr, repoPath("deploy", "prometheus", "rules", "*.yml"))
}

// startPrometheusWith is startPrometheus loading the rule files of rules
// (a glob) and passing flags to the server.
func startPrometheusWith(t *testing.T, bin, addr, rules string, flags ...string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: meridian
    static_configs:
      - targets: [%q]
  - job_name: gateways
    metrics_path: /metrics/gateways
    honor_labels: true
    static_configs:
      - targets: [%q]
`, rules, addr, addr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	p := startProc(t, nil, bin, append([]string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen,
		"--log.level=warn"}, flags...)...)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	s := &promServer{t: t, base: "http://" + listen, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("prometheus exited before it was ready: %v", p.err)
		default:
		}
		if resp, err := s.client.Get(s.base + "/-/ready"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s within 30s", listen)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a condition wait
	}
}

// freeAddr returns a 127.0.0.1 address with a port nothing listens on now.
// Prometheus takes only an address, not a listener, hence the small window
// in which another process could take the port.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// promSample is one series of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

type promResult []promSample

// value returns the value of the only series matching sel, a comma-separated
// list of label="value" pairs (“ matches any), or NaN if none or several
// match.
func (r promResult) value(sel string) float64 {
	var want [][2]string
	for pair := range strings.SplitSeq(sel, ",") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		want = append(want, [2]string{k, strings.Trim(v, `"`)})
	}
	found, n := math.NaN(), 0
	for _, s := range r {
		if !slices.ContainsFunc(want, func(kv [2]string) bool { return s.Metric[kv[0]] != kv[1] }) {
			found, n = s.Value, n+1
		}
	}
	if n != 1 {
		return math.NaN()
	}
	return found
}

func (r promResult) String() string {
	var b strings.Builder
	for _, s := range r {
		fmt.Fprintf(&b, "%v=%v ", s.Metric, s.Value)
	}
	return b.String()
}

// get calls the HTTP API and decodes its data field into out.
func (s *promServer) get(path string, params url.Values, out any) {
	s.t.Helper()
	resp, err := s.client.Get(s.base + path + "?" + params.Encode())
	if err != nil {
		s.t.Fatalf("prometheus %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		s.t.Fatalf("prometheus %s: decode: %v", path, err)
	}
	if body.Status != "success" {
		s.t.Fatalf("prometheus %s %v: %s %s", path, params, body.Status, body.Error)
	}
	if err := json.Unmarshal(body.Data, out); err != nil {
		s.t.Fatalf("prometheus %s: decode data: %v", path, err)
	}
}

// query runs an instant query and returns its vector.
func (s *promServer) query(q string) promResult {
	s.t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	s.get("/api/v1/query", url.Values{"query": {q}}, &data)
	if data.ResultType != "vector" {
		s.t.Fatalf("query %s: result type %s, want vector", q, data.ResultType)
	}
	out := make(promResult, 0, len(data.Result))
	for _, r := range data.Result {
		str, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			s.t.Fatalf("query %s: value %v: %v", q, r.Value[1], err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out
}

// waitFor polls q until cond holds for its result, failing with the last
// result after timeout.
func (s *promServer) waitFor(timeout time.Duration, what, q string, cond func(promResult) bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := s.query(q)
		if cond(r) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %s waiting for %s; %s = %s", timeout, what, q, r)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition wait
	}
}

// checkRulesHealthy waits until every rule group in want has been evaluated
// and requires every rule in it to be healthy.
func (s *promServer) checkRulesHealthy(want []string) {
	s.t.Helper()
	type rule struct {
		Name      string `json:"name"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
	}
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		s.get("/api/v1/rules", nil, &data)
		var got []string
		var unknown, bad []string
		for _, g := range data.Groups {
			got = append(got, g.Name)
			for _, r := range g.Rules {
				switch r.Health {
				case "ok":
				case "unknown": // not evaluated yet
					unknown = append(unknown, r.Name)
				default:
					bad = append(bad, fmt.Sprintf("%s/%s: %s %s", g.Name, r.Name, r.Health, r.LastError))
				}
			}
		}
		if len(bad) > 0 {
			s.t.Fatalf("rules failing: %s", strings.Join(bad, "; "))
		}
		slices.Sort(got)
		if slices.Equal(got, want) && len(unknown) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("rule groups %v (not yet evaluated: %v), want %v all evaluated", got, unknown, want)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition wait
	}
}

// metricNames returns the names of every series Prometheus holds.
func (s *promServer) metricNames() map[string]bool {
	s.t.Helper()
	var names []string
	s.get("/api/v1/label/__name__/values", nil, &names)
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

// ruleGroupNames lists the groups of deploy/prometheus/rules/*.yml, sorted.
func ruleGroupNames(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^  - name: (\S+)`)
	var out []string
	for _, src := range readFiles(t, repoPath("deploy", "prometheus", "rules", "*.yml")) {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// referencedMetricNames lists the metric names used by the rule files and the
// Grafana dashboard: raw meridian_* series and recorded level:metric:op series.
func referencedMetricNames(t *testing.T) []string {
	t.Helper()
	files := readFiles(t, repoPath("deploy", "prometheus", "rules", "*.yml"))
	files = append(files, readFiles(t, repoPath("deploy", "grafana", "dashboards", "*.json"))...)
	// Every identifier-like token: a raw name is meridian_..., a recorded one
	// level:meridian_...:operations.
	token := regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	recorded := regexp.MustCompile(`^(?:instance|region|cluster):meridian_[a-z0-9_]+:[a-z0-9_]+$`)
	seen := map[string]bool{}
	for _, src := range files {
		for line := range strings.SplitSeq(src, "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "#") || strings.HasPrefix(l, "- name:") {
				continue // comments and group names in the rule files
			}
			for _, tok := range token.FindAllString(line, -1) {
				if strings.HasPrefix(tok, "meridian_") && !strings.Contains(tok, ":") || recorded.MatchString(tok) {
					seen[tok] = true
				}
			}
		}
	}
	if len(seen) < 30 {
		t.Fatalf("found only %d metric names in deploy/; the pattern is broken", len(seen))
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func readFiles(t *testing.T, pattern string) []string {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no files match %s: %v", pattern, err)
	}
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
