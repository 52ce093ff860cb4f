package gateway

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// goldenRegistry registers the metrics of a Recorder holding a fixed set of
// requests, plus one published report and one failed publish.
func goldenRegistry(t *testing.T, namespace string) (*prometheus.Registry, *Recorder) {
	t.Helper()
	var rec Recorder
	for _, r := range []struct {
		status int
		d      time.Duration
	}{
		{200, 3 * time.Millisecond},
		{200, 7 * time.Millisecond},
		{204, 40 * time.Millisecond},
		{301, 2 * time.Second},
		{404, time.Millisecond},
		{499, 30 * time.Second},
		{502, 100 * time.Millisecond},
		{101, 0},
	} {
		rec.Begin()
		rec.End(r.status, r.d)
	}
	rec.Begin() // one in flight
	m := newMetrics(namespace, &rec)
	m.onPublish(nil)
	m.onPublish(nil)
	m.onPublish(errors.New("nats: outbound buffer limit exceeded"))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	return reg, &rec
}

// TestMetricsGolden compares the exposition with testdata/metrics.golden.
func TestMetricsGolden(t *testing.T) {
	reg, _ := goldenRegistry(t, "meridian")
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		var buf bytes.Buffer
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
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
		t.Fatal(err)
	}
}

func TestMetricsLint(t *testing.T) {
	reg, _ := goldenRegistry(t, "meridian")
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsFollowRecorder checks that a scrape reads the Recorder live
// (the collector keeps no counts of its own) and honours the namespace.
func TestMetricsFollowRecorder(t *testing.T) {
	reg, rec := goldenRegistry(t, "acme")
	count := func(name string) int {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("acme_proxy_requests_total"); n != int(numClasses) {
		t.Errorf("%d requests_total series, want one per class", n)
	}
	before := `
# HELP acme_proxy_active_requests Requests in flight.
# TYPE acme_proxy_active_requests gauge
acme_proxy_active_requests 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(before), "acme_proxy_active_requests"); err != nil {
		t.Fatal(err)
	}
	rec.End(503, time.Millisecond)
	after := `
# HELP acme_proxy_active_requests Requests in flight.
# TYPE acme_proxy_active_requests gauge
acme_proxy_active_requests 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(after), "acme_proxy_active_requests"); err != nil {
		t.Fatal(err)
	}
	var rd reading
	rec.read(&rd)
	if rd.classes[class5xx] != 2 {
		t.Fatalf("5xx = %d", rd.classes[class5xx])
	}
}
