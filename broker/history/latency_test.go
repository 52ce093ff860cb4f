package history

import (
	"math"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// tickHist is the histogram of ds, as a snapshot carries for its tick.
func tickHist(ds []time.Duration) *proto.Histogram {
	var d proto.DenseHist
	for _, v := range ds {
		d.Observe(v)
	}
	h := d.AppendSparse(nil)
	return &h
}

// A history bucket's latency quantile is the quantile of the requests of
// that bucket: the merge of its snapshots' tick histograms.
func TestSeriesLatencyFromMergedTicks(t *testing.T) {
	var ss []proto.Snapshot
	perBucket := map[int][]time.Duration{}
	for sec := range 180 {
		s := snap(sec, uint64(sec), 0, 0, 0, 0)
		var ds []time.Duration
		for k := range sec % 7 { // some ticks see no request
			ds = append(ds, time.Duration(1+(sec*13+k*29)%400)*time.Millisecond+time.Duration(sec)*time.Microsecond)
		}
		if len(ds) > 0 {
			s.LatencyHistogram = tickHist(ds)
		}
		perBucket[sec/60*60] = append(perBucket[sec/60*60], ds...)
		ss = append(ss, s)
	}
	for _, m := range []proto.Metric{proto.LatencyP50, proto.LatencyP90, proto.LatencyP99, proto.LatencyMax} {
		q := proto.LatencyQuantiles[m-proto.LatencyP50]
		pts := SeriesStep(ss, m, t0, t0.Add(179*time.Second), time.Minute)
		if len(pts) != 3 {
			t.Fatalf("%v: %d points", m, len(pts))
		}
		for _, p := range pts {
			ds := slices.Clone(perBucket[int(p.Time.Sub(t0)/time.Second)])
			slices.Sort(ds)
			exact := float64(ds[proto.QuantileRank(q, uint64(len(ds)))-1]) / 1e6
			if rel := math.Abs(p.Value-exact) / exact; rel > proto.HistMaxRelativeError {
				t.Errorf("%v at %v: %v ms, exact %v ms", m, p.Time, p.Value, exact)
			}
		}
	}
	// A bucket without requests reads 0.
	idle := []proto.Snapshot{snap(0, 0, 0, 0, 0, 0)}
	if pts := SeriesStep(idle, proto.LatencyP99, t0, t0, time.Second); len(pts) != 1 || pts[0].Value != 0 {
		t.Fatalf("idle bucket: %v", pts)
	}
}

func TestMetricInfoCoversEveryMetric(t *testing.T) {
	for i, name := range proto.MetricNames() {
		if metricInfo[i].Name != name || metricInfo[i].Kind == "" || metricInfo[i].Unit == "" {
			t.Errorf("metric %d %s: info %+v", i, name, metricInfo[i])
		}
	}
}

// The REST API serves a latency metric's history from the tick histograms
// stored with the snapshots in JetStream.
func TestAPILatencyHistory(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)
	srv, js := startAPI(t, now.Add(59*time.Second))
	var all []time.Duration
	for i := range 60 {
		s := snap(0, uint64(i+1), 0, 0, 0, 0)
		s.Time = now.Add(time.Duration(i) * time.Second)
		ds := []time.Duration{time.Duration(i+1) * time.Millisecond, time.Duration(3*i+7) * time.Millisecond}
		all = append(all, ds...)
		s.LatencyHistogram = tickHist(ds)
		publish(t, js, s)
	}
	var h historyResponse
	q := url.Values{"metric": {"latency_p90_ms"}, "start": {now.Format(time.RFC3339)},
		"end": {now.Add(59 * time.Second).Format(time.RFC3339)}, "step": {"60s"}}
	getJSON(t, srv.URL+"/api/metrics/history?"+q.Encode(), http.StatusOK, &h)
	if len(h.DataPoints) != 1 {
		t.Fatalf("points %v, want one bucket of the minute", h.DataPoints)
	}
	slices.Sort(all)
	exact := float64(all[proto.QuantileRank(0.9, uint64(len(all)))-1]) / 1e6
	if got := h.DataPoints[0].Value; math.Abs(got-exact) > exact*proto.HistMaxRelativeError+0.0005 {
		t.Fatalf("p90 of the minute %v ms, exact %v ms", got, exact)
	}
}
