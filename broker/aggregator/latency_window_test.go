package aggregator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/meridian-metrics/meridian/proto"
)

// randomDelta is a sparse histogram of up to 40 buckets around a random
// centre, sometimes with clamped observations, sometimes empty.
func randomDelta(r *rand.Rand) proto.Histogram {
	var d proto.DenseHist
	centre := r.IntN(proto.HistSlots)
	for range r.IntN(40) {
		slot := min(max(centre+r.IntN(60)-30, 0), proto.HistSlots-1)
		var over uint64
		if slot == proto.HistSlots-1 && r.IntN(2) == 0 {
			over = 1
		}
		d.AddSlot(slot, uint64(1+r.IntN(1000)), over)
	}
	return d.AppendSparse(nil)
}

// The running window of the cluster and the regions (runLat) and the lazy
// one of instances (latWindow) give bit-identical tick histograms and
// quantiles to the re-merging window they replaced (refLatWindow), over
// random deltas and random tick sequences: seconds skipped, re-ticks of the
// same second with and without new deltas, and clock steps back.
func TestLatencyWindowMatchesReference(t *testing.T) {
	for seed := range uint64(50) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			width := int64(1 + r.IntN(12))
			ref := newRefLatWindow(width)
			var run runLat
			var inst latWindow
			var refScratch, scratch proto.DenseHist
			var unpack []proto.HistBucket
			sec := int64(1_700_000_000)
			for step := range 400 {
				for range r.IntN(4) {
					d := randomDelta(r)
					if len(d.Buckets) == 0 {
						continue // recordLatency never queues an empty delta
					}
					ref.add(&d)
					run.add(&d, width)
					inst.add(&d, width)
				}
				switch p := r.IntN(20); {
				case p == 0:
					sec -= int64(1 + r.IntN(20)) // the clock steps back
				case p < 3: // the same second again
				case p < 5:
					sec += int64(2 + r.IntN(int(width)+3)) // ticks missed
				default:
					sec++
				}
				var want, got, gotInst [proto.NumLatencyQuantiles]float64
				wantH := ref.tick(sec, width, &refScratch, &want)
				gotH := run.tick(sec, width, &got)
				instH := inst.tick(sec, &scratch, &unpack)
				if inst.n > 0 {
					inst.quantiles(sec, width, &scratch, &unpack, &gotInst)
				}
				if got != want || gotInst != want {
					t.Fatalf("step %d second %d: quantiles %v (instance %v), want %v", step, sec, got, gotInst, want)
				}
				for what, h := range map[string]*proto.Histogram{"running": gotH, "instance": instH} {
					if (h == nil) != (wantH == nil) || h != nil && (!slices.Equal(h.Buckets, wantH.Buckets) || h.Over != wantH.Over) {
						t.Fatalf("step %d second %d: %s tick histogram %v, want %v", step, sec, what, h, wantH)
					}
				}
			}
		})
	}
}
