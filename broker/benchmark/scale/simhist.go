package scale

import (
	"fmt"
	"math"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// The simulated latency histograms.
//
// A real gateway's report carries a cumulative schema-6 histogram of a few
// dozen occupied buckets, and decoding it, taking its delta and merging it
// into the windows and rollups is most of an aggregator's per-report cost.
// Each simulated instance therefore follows one of histShapes log-normal-ish
// shapes: K buckets spread over three octaves around a median of 1.5 to 6 ms,
// with fixed per-second counts. An instance's cumulative histogram is then
// Seq × mult × weights, written at publish time into its worker's scratch
// buffer: no histogram is stored per instance, so 100k instances cost the
// simulator nothing more in memory.

const (
	// histShapes is how many distinct shapes the instances cycle through
	// (instance i follows shape i mod histShapes): enough that the cluster's
	// quantiles differ from any one instance's.
	histShapes = 8
	// histSpanSlots is how many slots (three octaves) a shape's buckets
	// spread over, when K is small enough to leave gaps.
	histSpanSlots = 3 * proto.HistBucketsPerOctave
	// histPeak is the count per second of a shape's middle bucket.
	histPeak = 40
	// MaxHistogramBuckets bounds Config.HistogramBuckets: beyond it a shape
	// is wider than the tracked range around its median allows.
	MaxHistogramBuckets = 256
	// rankSlack is how far in rank (a share of the observations) an
	// observed quantile may be from the simulator's: the aggregator's
	// window holds whole seconds of each instance's reports but not
	// always the same number of seconds of each (an instance's report can
	// fall on either side of a tick), which shifts the mix a little.
	rankSlack = 0.01
)

// histShape is one shape's per-second bucket counts and what they imply for
// the report's other latency fields.
type histShape struct {
	buckets []proto.HistBucket // per-second counts, ascending slots
	count   uint64             // Σ counts: requests per second
	sumNs   uint64             // Σ counts × bucket midpoint
	coarse  [proto.NumLatencyBuckets]uint64
}

// newHistShapes builds the shapes of k buckets each; nil when k is 0.
func newHistShapes(k int) []histShape {
	if k <= 0 {
		return nil
	}
	stride := max(1, histSpanSlots/k)
	shapes := make([]histShape, histShapes)
	for g := range shapes {
		median := 1.5e-3 * math.Pow(2, float64(g)*2/float64(histShapes)) // 1.5 to ~5.2 ms
		center := proto.KeySlot(proto.HistKey(median))
		first := center - stride*(k/2)
		sh := &shapes[g]
		for j := range k {
			slot := first + j*stride
			// A Gaussian in log space (log-normal), every bucket at least
			// one request so that all k are occupied.
			z := float64(j-k/2) / (float64(k) / 5)
			c := uint64(math.Max(1, math.Round(histPeak*math.Exp(-z*z/2))))
			sh.buckets = append(sh.buckets, proto.HistBucket{Slot: int32(slot), Count: c})
			sh.count += c
			d := time.Duration(proto.SlotMillis(slot) * 1e6)
			sh.sumNs += c * uint64(d)
			sh.coarse[proto.LatencyBucket(d)] += c
		}
	}
	return shapes
}

// cumulative writes the cumulative histogram of an instance of shape sh that
// has published seq reports at mult times the shape's rate into buf.
func (sh *histShape) cumulative(buf []proto.HistBucket, seq, mult uint64) []proto.HistBucket {
	buf = buf[:0]
	for _, b := range sh.buckets {
		buf = append(buf, proto.HistBucket{Slot: b.Slot, Count: b.Count * seq * mult})
	}
	return buf
}

// LatencyWant is what the simulator knows of the latency its instances
// report: the merged per-second histogram of them all, exactly, and its
// quantiles. The aggregator's sliding window holds whole seconds of it.
type LatencyWant struct {
	// Buckets is the simulated histogram's bucket count per instance.
	Buckets int `json:"buckets"`
	// Ms are proto.LatencyQuantiles of the merged per-second histogram;
	// Lo and Hi those at the rank rankSlack below and above.
	Ms [proto.NumLatencyQuantiles]float64 `json:"ms"`
	Lo [proto.NumLatencyQuantiles]float64 `json:"lo_ms"`
	Hi [proto.NumLatencyQuantiles]float64 `json:"hi_ms"`
	// slots marks every slot any instance reports.
	slots map[int32]bool
}

// LatencyWant returns what the cluster's latency quantiles must be; zero
// when the instances send no histogram.
func (s *Simulator) LatencyWant() LatencyWant {
	want := LatencyWant{Buckets: s.histBuckets}
	if len(s.shapes) == 0 {
		return want
	}
	var d proto.DenseHist
	want.slots = map[int32]bool{}
	for _, w := range s.workers {
		for i := range w.insts {
			inst := &w.insts[i]
			sh := &s.shapes[inst.shape]
			for _, b := range sh.buckets {
				d.AddSlot(int(b.Slot), b.Count*inst.mult, 0)
				want.slots[b.Slot] = true
			}
		}
	}
	qs := proto.LatencyQuantiles[:]
	d.Quantiles(qs, want.Ms[:])
	shifted := func(delta float64, out []float64) {
		q := make([]float64, len(qs))
		for i := range qs {
			q[i] = min(max(qs[i]+delta, 0), 1)
		}
		d.Quantiles(q, out)
	}
	shifted(-rankSlack, want.Lo[:])
	shifted(rankSlack, want.Hi[:])
	return want
}

// LatencySeen compares the cluster snapshots of the window with what the
// simulator sent.
type LatencySeen struct {
	Want LatencyWant `json:"want"`
	// Snapshots is how many cluster snapshots of the window were compared;
	// Last the quantiles of the last of them.
	Snapshots int                                `json:"snapshots"`
	Last      [proto.NumLatencyQuantiles]float64 `json:"last_ms"`
	// Off describes the quantiles outside [Lo, Hi] and the histogram
	// slots no instance sent (at most maxFaults).
	Off []string `json:"off,omitempty"`
}

// compare checks one cluster snapshot of the window against w.
func (l *LatencySeen) compare(s *proto.Snapshot) {
	l.Snapshots++
	l.Last = s.LatencyMs
	off := func(format string, args ...any) {
		if len(l.Off) < maxFaults {
			l.Off = append(l.Off, fmt.Sprintf(format, args...))
		}
	}
	sec := s.Time.Unix()
	for i, got := range s.LatencyMs {
		// Both sides quote bucket midpoints, so a quantile in range equals
		// one of the buckets between Lo and Hi: the histogram's own error
		// is already in both.
		if got < l.Want.Lo[i] || got > l.Want.Hi[i] {
			off("second %d: q%g %.4f ms, want %.4f ms (%.4f to %.4f)", sec, proto.LatencyQuantiles[i], got, l.Want.Ms[i], l.Want.Lo[i], l.Want.Hi[i])
		}
	}
	if h := s.LatencyHistogram; h != nil {
		for _, b := range h.Buckets {
			if !l.Want.slots[b.Slot] {
				off("second %d: slot %d (%.4f ms) in the tick's histogram, which no instance sent", sec, b.Slot, proto.SlotMillis(int(b.Slot)))
				break
			}
		}
	}
}
