package scale

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// TestSimulatorHistogramsAreExact checks, through a real NATS server, that
// every simulated report carries a valid cumulative histogram of K occupied
// buckets that agrees with its duration count, and that the histogram of a
// second of every instance's requests (each instance's second report minus
// its first, merged) has exactly the quantiles the simulator says the
// cluster must show.
func TestSimulatorHistogramsAreExact(t *testing.T) {
	const n, k = 40, 40
	_, nc := natstest.StartTest(t)
	var mu sync.Mutex
	first := map[string]proto.Report{}
	second := map[string]proto.Report{}
	sub, err := nc.Subscribe(proto.ReportSubjectAll, func(m *nats.Msg) {
		r, err := proto.DecodeReport(m.Data)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("invalid report: %v", err)
			return
		}
		h := r.LatencyHistogram
		switch {
		case h == nil:
			t.Errorf("%s: no histogram", r.Instance)
			return
		case len(h.Buckets) != k || h.Count() != r.DurationCount || h.Over != 0:
			t.Errorf("%s: %d buckets counting %d (over %d) for %d durations, want %d buckets", r.Instance, len(h.Buckets), h.Count(), h.Over, r.DurationCount, k)
		}
		// The decoded histogram is the report's own: keep it.
		switch r.Seq {
		case 1:
			first[r.Instance] = r
		case 2:
			second[r.Instance] = r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	pub, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sim := NewSimulator([]*nats.Conn{pub}, n, []string{"eu", "us"}, 2, "boot-1", k)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sim.Run(ctx) })
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	wait.For(t, 30*time.Second, "two reports from every instance", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) == n && len(second) == n
	})
	stop()

	mu.Lock()
	defer mu.Unlock()
	var merged proto.Histogram
	for name, r2 := range second {
		r1 := first[name]
		d, ok := r2.LatencyHistogram.Delta(r1.LatencyHistogram, nil)
		if !ok {
			t.Fatalf("%s: histogram went down from seq 1 to 2", name)
		}
		if d.Count() != r2.DurationCount-r1.DurationCount {
			t.Fatalf("%s: a second's histogram counts %d, durations %d", name, d.Count(), r2.DurationCount-r1.DurationCount)
		}
		merged = merged.Merged(&d)
	}
	want := sim.LatencyWant()
	var got [proto.NumLatencyQuantiles]float64
	merged.Quantiles(proto.LatencyQuantiles[:], got[:])
	if got != want.Ms || want.Buckets != k {
		t.Fatalf("a second of every instance has quantiles %v ms, the simulator says %v ms (%d buckets)", got, want.Ms, want.Buckets)
	}
	// The shapes differ, so the merged histogram is wider than any one
	// instance's and its quantiles spread over a few ms.
	if len(merged.Buckets) <= k || want.Ms[0] < 1 || want.Ms[0] > 10 || want.Ms[3] <= want.Ms[0] {
		t.Fatalf("merged %d buckets, quantiles %v ms: want several shapes around a few ms", len(merged.Buckets), want.Ms)
	}
	for i := range want.Ms {
		if want.Lo[i] > want.Ms[i] || want.Hi[i] < want.Ms[i] {
			t.Fatalf("quantile %d: %v not in [%v, %v]", i, want.Ms[i], want.Lo[i], want.Hi[i])
		}
	}
}

func TestSimulatorWithoutHistograms(t *testing.T) {
	sim := NewSimulator([]*nats.Conn{nil}, 10, []string{"eu"}, 1, "boot-1", 0)
	if w := sim.LatencyWant(); w.Buckets != 0 {
		t.Fatalf("no histograms, but want %+v", w)
	}
}

// TestLatencySeenFlagsWrongQuantilesAndSlots: a cluster snapshot whose
// quantiles are the simulator's passes; one a rank slack off, or carrying a
// slot no instance sent, is flagged.
func TestLatencySeenFlagsWrongQuantilesAndSlots(t *testing.T) {
	sim := NewSimulator([]*nats.Conn{nil}, 100, []string{"eu", "us"}, 2, "boot-1", DefaultHistogramBuckets)
	want := sim.LatencyWant()
	var tick proto.DenseHist
	for _, sh := range sim.shapes {
		for _, b := range sh.buckets {
			tick.AddSlot(int(b.Slot), b.Count, 0)
		}
	}
	h := tick.AppendSparse(nil)
	snap := func(ms [proto.NumLatencyQuantiles]float64, hist proto.Histogram) *proto.Snapshot {
		return &proto.Snapshot{Time: time.Unix(100, 0), LatencyMs: ms, LatencyHistogram: &hist}
	}
	l := LatencySeen{Want: want}
	l.compare(snap(want.Ms, h))
	if len(l.Off) != 0 || l.Snapshots != 1 {
		t.Fatalf("the simulator's own quantiles flagged: %v", l.Off)
	}
	low := want.Ms
	low[0] = proto.SlotMillis(proto.KeySlot(proto.HistKey(want.Lo[0]/1e3)) - 1)
	l.compare(snap(low, h))
	if len(l.Off) != 1 || !strings.Contains(l.Off[0], "q0.5") {
		t.Fatalf("p50 below the slack not flagged: %v", l.Off)
	}
	shifted := proto.Histogram{Buckets: []proto.HistBucket{{Slot: h.Buckets[0].Slot - 1, Count: 1}}}
	l.compare(snap(want.Ms, shifted))
	if len(l.Off) != 2 || !strings.Contains(l.Off[1], fmt.Sprintf("slot %d", h.Buckets[0].Slot-1)) {
		t.Fatalf("a slot no instance sent not flagged: %v", l.Off)
	}
}
