package aggregator

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// exporterMerger holds three instances at now: gw-a live, gw-b stale (up 0)
// and restarted once, gw-c silent for longer than the 5m TTL.
func exporterMerger(now time.Time) *Merger {
	m := NewMerger(MergerConfig{})
	a := rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 10, errs: 2, durMs: 1500, active: 3}.report(now)
	a.LatencyBuckets = []uint64{1, 2, 0, 3, 0, 0, 1, 0, 0, 2, 0, 1}
	a.StartTime = time.Unix(1740000000, 500_000_000).UTC()

	b1 := rp{inst: "gw-b", region: "us", boot: "b1", seq: 7, total: 500, errs: 0, durMs: 5000}.report(now)
	b2 := rp{inst: "gw-b", region: "us", boot: "b2", seq: 1, total: 4, errs: 1, durMs: 40, active: 1}.report(now)
	b2.LatencyBuckets = []uint64{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0}
	b2.StartTime = time.Time{} // an instance that does not report its start

	c := rp{inst: "gw-c", region: "eu", boot: "c", seq: 1, total: 1, durMs: 1}.report(now)

	m.Apply(c, now.Add(-6*time.Minute))
	m.Apply(b1, now.Add(-time.Minute-time.Second))
	if o := m.Apply(b2, now.Add(-time.Minute)); o != OutcomeResetBoot {
		panic(o)
	}
	m.Apply(a, now.Add(-time.Second))
	return m
}

func TestGatewayCollectorGolden(t *testing.T) {
	now := t0.Add(time.Hour)
	var mu sync.Mutex
	c := newGatewayCollector("meridian", &mu, exporterMerger(now), func() time.Time { return now }, 5*time.Minute)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}

	const golden = "testdata/gateways.prom"
	if *update {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(golden)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f); err != nil {
		t.Error(err)
	}
}

func TestGatewayCollectorNamespaceAndTTL(t *testing.T) {
	now := t0.Add(time.Hour)
	var mu sync.Mutex
	m := exporterMerger(now)
	c := newGatewayCollector("acme", &mu, m, func() time.Time { return now }, 30*time.Second)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	n, err := testutil.GatherAndCount(reg, "acme_gateway_up")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 { // only gw-a reported within 30s
		t.Fatalf("%d acme_gateway_up series, want 1", n)
	}
	exp := `# HELP acme_gateway_up 1 if the instance reported recently and has not shut down, else 0.
# TYPE acme_gateway_up gauge
acme_gateway_up{instance="gw-a",region="eu"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "acme_gateway_up"); err != nil {
		t.Error(err)
	}
	// A final report turns up to 0 at once.
	fin := rp{inst: "gw-a", region: "eu", boot: "a", seq: 2, total: 10, errs: 2, durMs: 1500, final: true}.report(now)
	fin.LatencyBuckets = []uint64{1, 2, 0, 3, 0, 0, 1, 0, 0, 2, 0, 1}
	if o := m.Apply(fin, now); o != OutcomeApplied {
		t.Fatalf("final report: %v", o)
	}
	exp = strings.Replace(exp, "} 1", "} 0", 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "acme_gateway_up"); err != nil {
		t.Error(err)
	}
}
