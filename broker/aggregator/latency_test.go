package aggregator

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// latGW is a gateway instance for latency tests: it keeps every duration it
// served (the truth) and reports cumulative counters with the histogram.
type latGW struct {
	inst, region, boot string
	seq                uint64
	total              uint64
	sum                uint64
	hist               proto.DenseHist
	noHist             bool // a build before the histogram
}

func (g *latGW) serve(ds ...time.Duration) {
	for _, d := range ds {
		g.hist.Observe(d)
		g.total++
		g.sum += uint64(d)
	}
}

func (g *latGW) restart(boot string) {
	g.boot, g.seq, g.total, g.sum = boot, 0, 0, 0
	g.hist.Reset()
}

func (g *latGW) report(at time.Time) proto.Report {
	g.seq++
	r := rp{inst: g.inst, region: g.region, boot: g.boot, seq: g.seq, total: g.total}.report(at)
	r.DurationSumNanos = g.sum
	if !g.noHist {
		h := g.hist.AppendSparse(nil)
		r.LatencyHistogram = &h
	}
	return r
}

// checkQuantiles compares a snapshot's latency quantiles with the exact
// nearest-rank quantiles of truth.
func checkQuantiles(t *testing.T, what string, s proto.Snapshot, truth []time.Duration) {
	t.Helper()
	if len(truth) == 0 {
		if s.LatencyMs != [proto.NumLatencyQuantiles]float64{} {
			t.Errorf("%s: latency %v, want zeros", what, s.LatencyMs)
		}
		return
	}
	sorted := slices.Clone(truth)
	slices.Sort(sorted)
	for i, q := range proto.LatencyQuantiles {
		exact := float64(sorted[proto.QuantileRank(q, uint64(len(sorted)))-1]) / 1e6
		if rel := math.Abs(s.LatencyMs[i]-exact) / exact; rel > proto.HistMaxRelativeError {
			t.Errorf("%s q=%v: %.4f ms, exact %.4f ms (%.3f%%)", what, q, s.LatencyMs[i], exact, rel*100)
		}
	}
}

func mustFind(t *testing.T, snaps []proto.Snapshot, scope string) proto.Snapshot {
	t.Helper()
	s, ok := find(snaps, scope)
	if !ok {
		t.Fatalf("no snapshot of %s", scope)
	}
	return s
}

func logNormal(r *rand.Rand, medianMs, sigma float64, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(math.Exp(math.Log(medianMs*1e6) + sigma*r.NormFloat64()))
	}
	return out
}

// Instance, region and cluster percentiles are exact merges of the
// instances' histograms over the window: they match the exact quantiles of
// the union of the durations each scope served.
func TestLatencyPercentilesMergeAcrossScopes(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 1))
	m := NewMerger(MergerConfig{AvgWindow: 10 * time.Second})
	gws := []*latGW{
		{inst: "gw-eu-1", region: "eu", boot: "a"}, {inst: "gw-eu-2", region: "eu", boot: "a"},
		{inst: "gw-us-1", region: "us", boot: "a"}, {inst: "gw-us-2", region: "us", boot: "a"},
	}
	served := map[string][]time.Duration{}
	var snaps []proto.Snapshot
	for tick := 1; tick <= 3; tick++ {
		now := t0.Add(time.Duration(tick) * time.Second)
		for i, g := range gws {
			ds := logNormal(r, float64(5+40*i), 0.3+0.3*float64(i), 500+100*i)
			g.serve(ds...)
			for _, scope := range []string{"cluster", "region." + g.region, "instance." + g.inst} {
				served[scope] = append(served[scope], ds...)
			}
			m.Apply(g.report(now), now)
		}
		snaps = m.Snapshots(now)
	}
	for scope, truth := range served {
		checkQuantiles(t, scope, mustFind(t, snaps, scope), truth)
	}
}

// Duplicated, lost and reordered reports and gateway restarts change
// nothing: the window's percentiles are those of exactly the requests served
// in it. An instance of an older build (no histogram) counts its requests
// but adds nothing to the percentiles.
func TestLatencyResetSafe(t *testing.T) {
	m := NewMerger(MergerConfig{AvgWindow: 5 * time.Second})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	old := &latGW{inst: "gw-old", region: "eu", boot: "a", noHist: true}
	var truth []time.Duration
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	g.serve(10*time.Millisecond, 20*time.Millisecond)
	truth = append(truth, 10*time.Millisecond, 20*time.Millisecond)
	r1 := g.report(at(1))
	m.Apply(r1, at(1))
	old.serve(time.Minute)
	m.Apply(old.report(at(1)), at(1))
	m.Snapshots(at(1))

	if out := m.Apply(r1, at(2)); out != OutcomeDuplicate { // duplicated
		t.Fatalf("duplicate: %v", out)
	}
	g.serve(30 * time.Millisecond)
	truth = append(truth, 30*time.Millisecond)
	lost := g.report(at(2)) // never delivered
	_ = lost
	g.serve(40 * time.Millisecond)
	truth = append(truth, 40*time.Millisecond)
	r3 := g.report(at(2))
	m.Apply(r3, at(2))
	if out := m.Apply(lost, at(2)); out != OutcomeDuplicate { // late, reordered
		t.Fatalf("late report: %v", out)
	}
	m.Snapshots(at(2))

	g.restart("b") // a crash: the new boot's counts start over and count in full
	g.serve(5*time.Millisecond, 500*time.Millisecond)
	truth = append(truth, 5*time.Millisecond, 500*time.Millisecond)
	if out := m.Apply(g.report(at(3)), at(3)); out != OutcomeResetBoot {
		t.Fatalf("restart: %v", out)
	}
	snaps := m.Snapshots(at(3))
	for _, scope := range []string{"cluster", "region.eu", "instance.gw-1"} {
		checkQuantiles(t, scope, mustFind(t, snaps, scope), truth)
	}
	checkQuantiles(t, "instance.gw-old", mustFind(t, snaps, "instance.gw-old"), nil)
	if s := mustFind(t, snaps, "cluster"); s.RequestsTotal != 7 {
		t.Fatalf("cluster requests %d, want 7", s.RequestsTotal)
	}

	// The window slides past everything: zeros, like avg_response_time.
	snaps = m.Snapshots(at(9))
	s := mustFind(t, snaps, "cluster")
	checkQuantiles(t, "cluster after the window", s, nil)
	if s.LatencyHistogram != nil || s.AvgResponseTimeMs != 0 {
		t.Fatalf("tick histogram %v, avg %v after the window", s.LatencyHistogram, s.AvgResponseTimeMs)
	}
}

// Each snapshot carries the histogram of its tick; the ticks of a span merge
// to the histogram of every request served in it, which is what history
// builds its buckets from.
func TestLatencyTickHistogramsSumToTheSpan(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	m := NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	var all []time.Duration
	var merged proto.DenseHist
	for tick := 1; tick <= 30; tick++ {
		now := t0.Add(time.Duration(tick) * time.Second)
		ds := logNormal(r, 30, 1, r.IntN(50))
		all = append(all, ds...)
		g.serve(ds...)
		m.Apply(g.report(now), now)
		if h := mustFind(t, m.Snapshots(now), "region.eu").LatencyHistogram; h != nil {
			data, _ := json.Marshal(h) // as stored in history
			var back proto.Histogram
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			merged.Add(&back)
		}
	}
	want := g.hist.AppendSparse(nil)
	if got := merged.AppendSparse(nil); !slices.Equal(got.Buckets, want.Buckets) {
		t.Fatalf("the ticks' histograms do not add up to the requests served")
	}
	var s proto.Snapshot
	merged.Quantiles(proto.LatencyQuantiles[:], s.LatencyMs[:])
	checkQuantiles(t, "30 s span", s, all)
}

// A successor restored from State has no histogram baselines (the state
// does not carry them): each instance's first report only sets its baseline,
// the next ones count their new requests, and the counters lose nothing.
func TestLatencyAfterRestoreStartsFromTheNextReport(t *testing.T) {
	m := NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	g.serve(time.Second, time.Second, time.Second)
	m.Apply(g.report(t0), t0)
	m.Snapshots(t0)
	n := restoredFromJSON(t, m)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.serve(7 * time.Millisecond)
	n.Apply(g.report(at(1)), at(1))
	s := mustFind(t, n.Snapshots(at(1)), "cluster")
	checkQuantiles(t, "first report after the restore", s, nil)
	if s.RequestsTotal != 4 {
		t.Fatalf("requests %d, want 4", s.RequestsTotal)
	}
	g.serve(3 * time.Millisecond)
	n.Apply(g.report(at(2)), at(2))
	checkQuantiles(t, "second report", mustFind(t, n.Snapshots(at(2)), "cluster"), []time.Duration{3 * time.Millisecond})
}

// A hot follower that takes over restores the leader's (possibly older)
// state but keeps the latency windows and baselines it built itself: the
// percentiles continue without a gap, and reports replayed after the
// restore count nothing twice.
func TestLatencyHotFollowerKeepsItsWindows(t *testing.T) {
	leader, follower := NewMerger(MergerConfig{}), NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var truth []time.Duration
	var reports []proto.Report
	for i, d := range []time.Duration{3 * time.Millisecond, 30 * time.Millisecond, 300 * time.Millisecond} {
		g.serve(d, d)
		truth = append(truth, d, d)
		reports = append(reports, g.report(at(i+1)))
	}
	leader.Apply(reports[0], at(1))
	leader.Snapshots(at(1))
	st := leader.State() // the leader dies after persisting this
	for i, r := range reports[:2] {
		follower.Apply(r, at(i+1))
		follower.Snapshots(at(i + 1))
	}
	if err := follower.Restore(st); err != nil {
		t.Fatal(err)
	}
	follower.Apply(reports[1], at(2)) // replayed: newer than the restored state
	follower.Apply(reports[2], at(3))
	checkQuantiles(t, "after the takeover", mustFind(t, follower.Snapshots(at(3)), "cluster"), truth)
}

// A newer report whose histogram restarted while its counters went on (a
// collector resuming its counters from a checkpoint) counts its histogram in
// full; it never freezes the instance's percentiles.
func TestLatencyHistogramRestartWithinABoot(t *testing.T) {
	m := NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.serve(time.Second, time.Second)
	m.Apply(g.report(at(1)), at(1))
	m.Snapshots(at(1))
	g.hist.Reset() // the collector restarted and resumed its counters only
	g.serve(4 * time.Millisecond)
	if out := m.Apply(g.report(at(2)), at(2)); out != OutcomeApplied {
		t.Fatalf("outcome %v", out)
	}
	checkQuantiles(t, "after the histogram restarted", mustFind(t, m.Snapshots(at(2)), "cluster"),
		[]time.Duration{time.Second, time.Second, 4 * time.Millisecond})
}

// restoredFromJSON is a new merger restored from src's state, through JSON
// as the state travels between aggregators.
func restoredFromJSON(t testing.TB, src *Merger) *Merger {
	t.Helper()
	data, err := json.Marshal(src.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	n := NewMerger(src.cfg)
	if err := n.Restore(st); err != nil {
		t.Fatalf("restore: %v", err)
	}
	return n
}

// TestInstanceStatusHistogramOutlivesLaterReports: a scrape's copy of an
// instance's histogram shares the merger's array, which the merger then
// must not overwrite with the next reports (it reuses it between scrapes).
func TestInstanceStatusHistogramOutlivesLaterReports(t *testing.T) {
	m := NewMerger(MergerConfig{})
	g := &latGW{inst: "gw-1", region: "eu", boot: "a"}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	g.serve(time.Millisecond, 2*time.Millisecond)
	m.Apply(g.report(at(1)), at(1))
	st := m.AppendInstanceStatus(nil, at(1))
	if len(st) != 1 || st[0].LatencyHistogram == nil {
		t.Fatalf("status %+v", st)
	}
	want := st[0].LatencyHistogram.Clone()
	for s := 2; s < 5; s++ {
		g.serve(time.Millisecond, 2*time.Millisecond) // same buckets: the array fits
		m.Apply(g.report(at(s)), at(s))
	}
	if got := *st[0].LatencyHistogram; !slices.Equal(got.Buckets, want.Buckets) || got.Over != want.Over {
		t.Fatalf("the scraped histogram changed under the scrape:\n got %v\nwant %v", got, want)
	}
	// The next status sees the newest baseline.
	if st2 := m.AppendInstanceStatus(nil, at(4)); st2[0].LatencyHistogram.Count() == want.Count() {
		t.Fatalf("second status still shows the first histogram (%d requests)", want.Count())
	}
}
