package naiveedge

import (
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// BenchmarkEncodeSnapshot is the baseline's per-delivery encoding, to be
// compared with the edge's once-per-tick AppendSnapshotEvent.
func BenchmarkEncodeSnapshot(b *testing.B) {
	s := snapshot(time.Now(), 123456789)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeSnapshot(&s, proto.AllMetrics); err != nil {
			b.Fatal(err)
		}
	}
}
