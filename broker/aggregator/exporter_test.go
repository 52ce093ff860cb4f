package aggregator

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/meridian-metrics/meridian/proto"
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

// An instance whose reports carry the high-resolution histogram is relayed
// with both the classic buckets and a native histogram of schema 6 whose
// buckets are exactly the instance's.
func TestGatewayCollectorNativeHistogram(t *testing.T) {
	now := t0.Add(time.Hour)
	m := NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-n", region: "eu", boot: "a"}
	ds := []time.Duration{50 * time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, 3100 * time.Microsecond, 40 * time.Millisecond, 2 * time.Second}
	g.serve(ds...)
	r := g.report(now)
	for _, d := range ds {
		r.LatencyBuckets[proto.LatencyBucket(d)]++
	}
	r.LatencyBuckets[0] -= r.RequestsTotal / 2 // undo rp's placeholder buckets
	r.LatencyBuckets[proto.NumLatencyBuckets-1] -= r.RequestsTotal - r.RequestsTotal/2
	m.Apply(r, now)
	var mu sync.Mutex
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newGatewayCollector("meridian", &mu, m, func() time.Time { return now }, time.Minute))
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var h *dto.Histogram
	for _, mf := range mfs {
		if mf.GetName() == "meridian_gateway_request_duration_seconds" {
			h = mf.GetMetric()[0].GetHistogram()
		}
	}
	if h == nil || h.GetSchema() != proto.HistSchema || h.GetZeroThreshold() != proto.HistZeroThreshold || h.GetZeroCount() != 1 || h.GetSampleCount() != 6 || len(h.GetBucket()) != len(proto.LatencyBounds) {
		t.Fatalf("histogram %v", h)
	}
	// Decode the native buckets back and compare them with the durations.
	want := map[int]uint64{}
	for _, d := range ds[1:] {
		slot, _ := proto.HistSlot(d)
		want[proto.SlotKey(slot)]++
	}
	got := map[int]uint64{}
	key, count, di := 0, int64(0), 0
	for i, sp := range h.GetPositiveSpan() {
		if i == 0 {
			key = int(sp.GetOffset())
		} else {
			key += int(sp.GetOffset())
		}
		for range sp.GetLength() {
			count += h.GetPositiveDelta()[di]
			got[key] = uint64(count)
			key++
			di++
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("native buckets %v, want %v", got, want)
	}
}
