package integration

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/gateway/loadgen"
	"github.com/meridian-metrics/meridian/proto"
)

// TestPrometheusNativeHistogramAgreesWithMeridian runs Debian's Prometheus
// with native histograms enabled against `meridian dev`, drives a known
// latency mix through both regions' gateways, and checks that
// histogram_quantile over the relayed native histograms — raw, and through
// the recording rules in deploy/prometheus/native — agrees with the
// latency_p50_ms and latency_p99_ms Meridian streams for the same requests,
// within the 1 % bound.
func TestPrometheusNativeHistogramAgreesWithMeridian(t *testing.T) {
	promBin := prometheusBinary(t)
	dev := startDev(t)
	euURL, usURL := strings.TrimSuffix(dev.euURL, "/"), strings.TrimSuffix(dev.usURL, "/")
	wsURL, metricsAddr := dev.wsURL, dev.metricsAddr

	prom := startPrometheusWith(t, promBin, metricsAddr, repoPath("deploy", "prometheus", "native", "*.yml"),
		"--enable-feature=native-histograms")
	prom.waitFor(30*time.Second, "the relayed native histograms scraped",
		`meridian_gateway_up`, func(r promResult) bool { return len(r) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, err := wsclient.Dial(ctx, wsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.Subscribe(ctx, map[string]any{"metrics": []string{"requests_total", "latency_p50_ms", "latency_p99_ms"}}); err != nil {
		t.Fatal(err)
	}

	// 90 % fast, 10 % slow in each region, slow ones spread over a range so
	// that the p99 is not on a bucket edge.
	eu := withDelays(euURL+"/a", map[string]int{"8ms": 18, "120ms": 1, "180ms": 1})
	us := withDelays(usURL+"/b", map[string]int{"15ms": 9, "250ms": 1})
	resEU := runLoad(t, ctx, loadgen.Config{Targets: eu, RPS: 200, Requests: 400})
	resUS := runLoad(t, ctx, loadgen.Config{Targets: us, RPS: 200, Requests: 200})
	sent := float64(resEU.Sent + resUS.Sent)

	ev := snapshotWhere(t, ctx, ws, "every request counted", func(ev proto.Event) bool {
		return ev.Values["requests_total"] == sent
	})
	p50, p99 := ev.Values["latency_p50_ms"]/1e3, ev.Values["latency_p99_ms"]/1e3
	if !(p50 > 0 && p99 > p50) {
		t.Fatalf("Meridian's p50 %v s, p99 %v s", p50, p99)
	}
	within := func(got, want float64) bool { return math.Abs(got-want) <= 0.01*want }

	// The raw cumulative histograms: every request of the run, once
	// Prometheus scraped the final counts.
	prom.waitFor(30*time.Second, "native histograms holding every request",
		`sum(histogram_count(meridian_gateway_request_duration_seconds))`, func(r promResult) bool { return r.value(``) == sent })
	for _, tc := range []struct {
		q    string
		want float64
	}{
		{`histogram_quantile(0.5, sum(meridian_gateway_request_duration_seconds))`, p50},
		{`histogram_quantile(0.99, sum(meridian_gateway_request_duration_seconds))`, p99},
	} {
		got := prom.query(tc.q).value(``)
		if !within(got, tc.want) {
			t.Errorf("%s = %v s, Meridian says %v s", tc.q, got, tc.want)
		} else {
			t.Logf("%s = %.5f s, Meridian %.5f s (%.2f%%)", tc.q, got, tc.want, 100*(got-tc.want)/tc.want)
		}
	}
	// The recording rules: a rate over 1m scales every bucket alike, so
	// their quantiles are those of the same requests.
	for _, tc := range []struct {
		rule string
		want float64
	}{
		{"cluster:meridian_gateway_request_duration_seconds:native_p50_rate1m", p50},
		{"cluster:meridian_gateway_request_duration_seconds:native_p99_rate1m", p99},
	} {
		prom.waitFor(30*time.Second, tc.rule+" within 1 % of Meridian's", tc.rule, func(r promResult) bool {
			return within(r.value(``), tc.want)
		})
	}
	prom.checkRulesHealthy([]string{"meridian_gateway_latency_native"})
}
