package aggregator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// benchMerger tracks n instances spread over 10 regions, each with a report.
func benchMerger(n int) (*Merger, []proto.Report) {
	m := NewMerger(MergerConfig{})
	reports := make([]proto.Report, n)
	for i := range reports {
		reports[i] = rp{
			inst: fmt.Sprintf("gw-%04d", i), region: fmt.Sprintf("region-%d", i%10), boot: "boot",
			seq: 1, total: 1000, errs: 10, durMs: 20000, active: 5,
		}.report(t0)
		m.Apply(reports[i], t0)
	}
	return m, reports
}

// BenchmarkSnapshots is the per-second tick with 1000 instances: one
// snapshot each plus 10 regions and the cluster, into a reused buffer.
func BenchmarkSnapshots(b *testing.B) {
	m, _ := benchMerger(1000)
	var buf []proto.Snapshot
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		buf = m.AppendSnapshots(buf[:0], now)
	}
	if len(buf) != 1011 {
		b.Fatalf("%d snapshots", len(buf))
	}
}

// BenchmarkApply is the per-report cost on the NATS callback path with 1000
// instances tracked.
func BenchmarkApply(b *testing.B) {
	m, reports := benchMerger(1000)
	now := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := &reports[i%len(reports)]
		r.Seq++
		r.RequestsTotal++
		r.RequestsSuccess++
		r.DurationCount++
		r.DurationSumNanos += uint64(time.Millisecond)
		if m.Apply(*r, now) != OutcomeApplied {
			b.Fatal("not applied")
		}
		i++
	}
}

// BenchmarkState is the cost of taking the state of 1000 instances, as the
// failover follow-up would every few seconds.
func BenchmarkState(b *testing.B) {
	m, _ := benchMerger(1000)
	for s := 1; s <= 10; s++ {
		m.Snapshots(t0.Add(time.Duration(s) * time.Second))
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.State()
	}
}

// BenchmarkApplyWithHistogram is BenchmarkApply with the high-resolution
// histogram a gateway reports after a minute at 100 requests/s (about 450
// buckets), each report adding 100 requests: the merge cost per report.
func BenchmarkApplyWithHistogram(b *testing.B) {
	const insts, steps = 100, 500
	r := rand.New(rand.NewPCG(1, 1))
	g := &latGW{inst: "x", region: "r", boot: "b"}
	serve := func(n int) {
		for range n {
			g.serve(time.Duration(math.Exp(math.Log(40e6) + 0.8*r.NormFloat64())))
		}
	}
	serve(6000)
	seq := make([]proto.Histogram, steps)
	for i := range seq {
		serve(100)
		seq[i] = g.hist.AppendSparse(nil)
	}
	m := NewMerger(MergerConfig{})
	reports := make([]proto.Report, insts)
	for i := range reports {
		reports[i] = rp{inst: fmt.Sprintf("gw-%04d", i), region: fmt.Sprintf("region-%d", i%10), boot: "boot", seq: 1, total: 1000}.report(t0)
		reports[i].LatencyHistogram = &seq[0]
		m.Apply(reports[i], t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rep := &reports[i%insts]
		step := (i/insts + 1) % steps
		if step == 0 {
			rep.BootID += "+" // the sequence starts over: a restart
		}
		rep.Seq++
		rep.RequestsTotal++
		rep.RequestsSuccess++
		rep.DurationCount++
		rep.LatencyHistogram = &seq[step]
		if o := m.Apply(*rep, t0); o != OutcomeApplied && o != OutcomeResetBoot {
			b.Fatalf("outcome %v", o)
		}
		i++
	}
}

// BenchmarkSnapshotsWithHistograms is the per-second tick with 1000
// instances over 10 regions, each reporting 100 requests a second with
// their histogram (a log-normal spread): the tick merges every report's
// delta into its instance, region and the cluster, and reads each scope's
// quantiles over the window.
func BenchmarkSnapshotsWithHistograms(b *testing.B) {
	const insts = 1000
	r := rand.New(rand.NewPCG(2, 2))
	m := NewMerger(MergerConfig{})
	gws := make([]*latGW, insts)
	for i := range gws {
		gws[i] = &latGW{inst: fmt.Sprintf("gw-%04d", i), region: fmt.Sprintf("region-%d", i%10), boot: "b"}
	}
	now := t0
	tick := func() {
		now = now.Add(time.Second)
		for _, g := range gws {
			for range 100 {
				g.serve(time.Duration(math.Exp(math.Log(40e6) + 0.8*r.NormFloat64())))
			}
			m.Apply(g.report(now), now)
		}
	}
	for range 12 { // fill the window
		tick()
		m.Snapshots(now)
	}
	var buf []proto.Snapshot
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		tick()
		b.StartTimer()
		buf = m.AppendSnapshots(buf[:0], now)
	}
	if len(buf) != 1011 || buf[0].LatencyMs[3] == 0 {
		b.Fatalf("%d snapshots, cluster p99 %v", len(buf), buf[0].LatencyMs[3])
	}
}
