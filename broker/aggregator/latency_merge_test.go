package aggregator

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// refScopes is the straightforward reference for the merger's latency: each
// scope's re-merging window (refLatWindow), fed with exactly the requests
// each instance served between two of its reports.
type refScopes struct {
	width   int64
	scratch proto.DenseHist
	wins    map[string]*refLatWindow
}

func (r *refScopes) add(scope string, d *proto.Histogram) {
	w := r.wins[scope]
	if w == nil {
		nw := newRefLatWindow(r.width)
		w = &nw
		r.wins[scope] = w
	}
	w.add(d)
}

// TestLatencyMatchesReferenceMerge drives a merger with random traffic of
// instances in three regions — one or two reports per tick, restarts,
// instances without histograms, seconds skipped, ticks repeated in the same
// second and the clock stepping back — and checks every scope's tick
// histogram and percentiles against the reference, bit for bit. A second
// merger is asked for the quantiles of a changing subset of instances only
// (on demand): its wanted instances read exactly the same, from the first
// tick they are wanted, and everything but the quantiles of the others is
// the same too.
func TestLatencyMatchesReferenceMerge(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			cfg := MergerConfig{AvgWindow: time.Duration(1+r.IntN(10)) * time.Second, MaxRequestRate: 1 << 40}
			all, some := NewMerger(cfg), NewMerger(cfg)
			ref := &refScopes{width: all.width, wins: map[string]*refLatWindow{}}
			type gw struct {
				name, region string
				boot, seq    int
				cum          proto.DenseHist
				noHist       bool
			}
			gws := make([]*gw, 12)
			for i := range gws {
				gws[i] = &gw{name: fmt.Sprintf("gw-%02d", i), region: fmt.Sprintf("r%d", i%3), noHist: i == 11}
			}
			recv := t0          // receipt clock: reports are applied in order
			tickAt := t0.Unix() // the tick's clock, which may step back
			var bufAll, bufSome []proto.Snapshot
			for step := range 150 {
				recv = recv.Add(time.Second)
				for _, g := range gws {
					for range r.IntN(3) {
						if r.IntN(40) == 0 {
							g.boot++
							g.seq = 0
							g.cum.Reset()
						}
						d := randomDelta(r)
						g.cum.Add(&d)
						g.seq++
						n := g.cum.Count()
						rep := rp{inst: g.name, region: g.region, boot: fmt.Sprint("b", g.boot), seq: uint64(g.seq), total: n}.report(recv)
						if !g.noHist {
							h := g.cum.AppendSparse(nil)
							rep.LatencyHistogram = &h
						}
						oa, os := all.Apply(rep, recv), some.Apply(rep, recv)
						if oa != os || oa == OutcomeRejected {
							t.Fatalf("step %d: outcomes %v, %v (%v)", step, oa, os, all.LastRejection())
						}
						// Reports arrive in order, so each one's delta —
						// the whole histogram for a boot's first — is what
						// was served since the last.
						if g.noHist || len(d.Buckets) == 0 {
							continue
						}
						for _, scope := range []string{"cluster", "region." + g.region, "instance." + g.name} {
							ref.add(scope, &d)
						}
					}
				}
				switch p := r.IntN(20); {
				case p == 0:
					tickAt -= int64(1 + r.IntN(15))
				case p < 3: // the same second again
				case p < 5:
					tickAt += int64(2 + r.IntN(12))
				default:
					tickAt++
				}
				now := time.Unix(tickAt, 0)
				wanted := map[string]bool{}
				for _, g := range gws {
					if r.IntN(3) == 0 {
						wanted[g.name] = true
					}
				}
				bufAll = all.AppendSnapshots(bufAll[:0], now)
				bufSome = some.AppendSnapshotsFor(bufSome[:0], now, func(name string) bool { return wanted[name] })
				if len(bufAll) != len(bufSome) {
					t.Fatalf("step %d: %d and %d snapshots", step, len(bufAll), len(bufSome))
				}
				for i := range bufAll {
					s, o := bufAll[i], bufSome[i]
					scope := s.Scope.String()
					var want [proto.NumLatencyQuantiles]float64
					var wantH *proto.Histogram
					if w := ref.wins[scope]; w != nil {
						wantH = w.tick(tickAt, ref.width, &ref.scratch, &want)
					}
					if s.LatencyMs != want {
						t.Fatalf("step %d %s: quantiles %v, reference %v", step, scope, s.LatencyMs, want)
					}
					if (s.LatencyHistogram == nil) != (wantH == nil) || wantH != nil &&
						(!slices.Equal(s.LatencyHistogram.Buckets, wantH.Buckets) || s.LatencyHistogram.Over != wantH.Over) {
						t.Fatalf("step %d %s: tick histogram %v, reference %v", step, scope, s.LatencyHistogram, wantH)
					}
					if s.Scope.Kind == proto.ScopeInstance && !wanted[s.Scope.Name] {
						if o.LatencyMs != ([proto.NumLatencyQuantiles]float64{}) {
							t.Fatalf("step %d %s: quantiles %v computed though not wanted", step, scope, o.LatencyMs)
						}
						o.LatencyMs = s.LatencyMs
					}
					if (o.LatencyHistogram == nil) != (s.LatencyHistogram == nil) || o.LatencyHistogram != nil &&
						!slices.Equal(o.LatencyHistogram.Buckets, s.LatencyHistogram.Buckets) {
						t.Fatalf("step %d %s: on demand tick histogram %v, all %v", step, scope, o.LatencyHistogram, s.LatencyHistogram)
					}
					o.LatencyHistogram, s.LatencyHistogram = nil, nil
					if o != s {
						t.Fatalf("step %d %s: on demand %+v, all %+v", step, scope, o, s)
					}
				}
			}
		})
	}
}

// Memory stays bounded by the instance cap: an instance forgotten after
// ForgetAfter leaves nothing behind, neither its state nor its histograms
// (baseline, window), once its last snapshot is dropped.
func TestForgottenInstancesAreFreed(t *testing.T) {
	m := NewMerger(MergerConfig{ForgetAfter: time.Minute})
	const n = 50
	var freed atomic.Int64
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		g := &latGW{inst: fmt.Sprintf("gw-%d", i), region: "eu", boot: "a"}
		for s := 1; s <= 3; s++ {
			now := t0.Add(time.Duration(s) * time.Second)
			g.serve(logNormal(r, 30, 1, 50)...)
			m.Apply(g.report(now), now)
		}
	}
	for s := 1; s <= 3; s++ {
		m.Snapshots(t0.Add(time.Duration(s) * time.Second))
	}
	for _, in := range m.instsBy {
		if !in.histKnown || in.lat.n == 0 {
			t.Fatalf("%s: no latency state to free", in.name)
		}
		runtime.AddCleanup(in, func(int) { freed.Add(1) }, 0)
		runtime.AddCleanup(&in.hist.Buckets[0], func(int) { freed.Add(1) }, 0)
	}
	m.Snapshots(t0.Add(3*time.Second + 2*time.Minute))
	if m.Len() != 0 {
		t.Fatalf("%d instances tracked after ForgetAfter", m.Len())
	}
	wait.For(t, 10*time.Second, "forgotten instances freed", func() bool {
		runtime.GC()
		return freed.Load() == 2*n
	})
}
