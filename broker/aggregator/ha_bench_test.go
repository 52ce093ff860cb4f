package aggregator

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// BenchmarkEncodeState is the leader's per-second cost of serialising the
// state of 1000 instances (JSON, then gzip).
func BenchmarkEncodeState(b *testing.B) {
	st := mergerWith(1000).State()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		data, err := EncodeState(&st)
		if err != nil {
			b.Fatal(err)
		}
		n = len(data)
	}
	b.ReportMetric(float64(n), "bytes")
}

// BenchmarkTakeOver is a new leader's restore of 1000 instances' state
// (decode and Restore) and the replay of a buffer with two boots each.
func BenchmarkTakeOver(b *testing.B) {
	src := mergerWith(1000)
	st := src.State()
	data, err := EncodeState(&st)
	if err != nil {
		b.Fatal(err)
	}
	buf := newReplayBuffer()
	for i := range 1000 {
		name := fmt.Sprintf("gw-%05d", i)
		buf.add(rp{inst: name, region: "r0", boot: "old", seq: 9, total: 5, start: t0.Add(-time.Minute)}.report(t0), t0)
		buf.add(rp{inst: name, region: "r0", boot: "new", seq: 1, total: 1, start: t0}.report(t0), t0)
	}
	m := NewMerger(MergerConfig{})
	b.ReportAllocs()
	for b.Loop() {
		s, err := DecodeState(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Restore(s); err != nil {
			b.Fatal(err)
		}
		buf.replay(m)
	}
}

// BenchmarkBookClaim is the per-snapshot cost of the publish guard and the
// rollup accumulation, paid by every aggregator for every published snapshot.
func BenchmarkBookClaim(b *testing.B) {
	bk := newBook()
	s := proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.InstanceScope("gw-00001"), SuccessRate: 100}
	sec := t0
	b.ReportAllocs()
	for b.Loop() {
		sec = sec.Add(time.Second)
		s.Time = sec
		if ok, _ := bk.claim(&s); !ok {
			b.Fatal("not claimed")
		}
		if sec.Second() == 0 {
			bk.close(sec)
			takeAll(bk)
		}
	}
}
