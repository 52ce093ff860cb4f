package aggregator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// benchRegionSnapshots encodes one second of region snapshots of 10
// regions, each with the tick histogram of 1,000 requests (log-normal
// around 40 ms: about 100 buckets), as the cluster tier receives them.
func benchRegionSnapshots(b *testing.B, sec int) [][]byte {
	rng := rand.New(rand.NewPCG(uint64(sec), 1))
	out := make([][]byte, 10)
	for i := range out {
		var h proto.DenseHist
		for range 1000 {
			h.Observe(time.Duration(40e6 * math.Exp(0.8*rng.NormFloat64())))
		}
		hist := h.AppendSparse(nil)
		total := uint64(1000 * (sec + 1))
		s := proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.RegionScope(fmt.Sprintf("region-%d", i)),
			Time: t0.Add(time.Duration(sec) * time.Second), RequestsTotal: total, RequestsSuccess: total,
			SuccessRate: 100, DurationSumNanos: total * 40e6, DurationCount: total, Instances: 1000, LatencyHistogram: &hist}
		data, err := s.Encode()
		if err != nil {
			b.Fatal(err)
		}
		out[i] = data
	}
	return out
}

// BenchmarkClusterMerge is the cluster tier's work per region snapshot (one
// op):
// decoding it, merging it, and its share of the second's cluster snapshot
// (10 regions a second, a 10 s window of merged tick histograms).
// "merge" leaves decoding out.
func BenchmarkClusterMerge(b *testing.B) {
	const seconds = 16
	secs := make([][][]byte, seconds)
	decoded := make([][]proto.Snapshot, seconds)
	for i := range secs {
		secs[i] = benchRegionSnapshots(b, i)
		for _, data := range secs[i] {
			s, err := proto.DecodeSnapshot(data)
			if err != nil {
				b.Fatal(err)
			}
			decoded[i] = append(decoded[i], s)
		}
	}
	for _, decode := range []bool{true, false} {
		name := "merge"
		if decode {
			name = "decode+merge"
		}
		b.Run(name, func(b *testing.B) {
			m := NewClusterMerger(MergerConfig{})
			var buf []proto.Snapshot
			b.ReportAllocs()
			sec, n := 0, 0
			for b.Loop() {
				now := t0.Add(time.Duration(sec)*time.Second + 5*time.Millisecond)
				i := n % 10
				var s proto.Snapshot
				if decode {
					var err error
					if s, err = proto.DecodeSnapshot(secs[sec%seconds][i]); err != nil {
						b.Fatal(err)
					}
				} else {
					s = decoded[sec%seconds][i]
				}
				s.Time = now.Truncate(time.Second)
				s.RequestsTotal = uint64(1000 * (sec + 1))
				s.RequestsSuccess, s.DurationCount = s.RequestsTotal, s.RequestsTotal
				if m.Add(&s, now) != RegionApplied {
					b.Fatal("not applied")
				}
				if n++; n%10 == 0 {
					buf = m.AppendSnapshots(buf[:0], now)
					sec++
				}
			}
		})
	}
}
