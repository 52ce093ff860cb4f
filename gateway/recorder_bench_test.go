package gateway

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// legacyRecorder is the Recorder as it was before the high-resolution
// histogram (classes, sum and the 12 classic buckets), kept here as the
// baseline BenchmarkRecorder compares against in the same run.
type legacyRecorder struct {
	active   atomic.Int64
	classes  [numClasses]atomic.Uint64
	sumNanos atomic.Uint64
	buckets  [proto.NumLatencyBuckets]atomic.Uint64
}

func (r *legacyRecorder) Begin() { r.active.Add(1) }

func (r *legacyRecorder) End(status int, d time.Duration) {
	r.buckets[proto.LatencyBucket(d)].Add(1)
	r.sumNanos.Add(uint64(d))
	r.classes[classOf(status)].Add(1)
	r.active.Add(-1)
}

type recorderUnderTest interface {
	Begin()
	End(status int, d time.Duration)
}

// BenchmarkRecorder measures recording one request (Begin + End), today's
// Recorder next to the legacy one. Both must report 0 allocs/op.
func BenchmarkRecorder(b *testing.B) {
	for _, impl := range []struct {
		name string
		new  func() recorderUnderTest
	}{
		{"hires", func() recorderUnderTest { return new(Recorder) }},
		{"legacy", func() recorderUnderTest { return new(legacyRecorder) }},
	} {
		b.Run(impl.name+"/serial", func(b *testing.B) {
			r := impl.new()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r.Begin()
				r.End(200+i%400, time.Duration(i%5000)*37*time.Microsecond)
			}
		})
		b.Run(impl.name+"/parallel", func(b *testing.B) {
			r := impl.new()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					r.Begin()
					r.End(200+i%400, time.Duration(i%5000)*37*time.Microsecond)
					i++
				}
			})
		})
	}
}

// BenchmarkRecorderCounters measures one reading (a report's worth) with a
// realistic spread of latencies recorded.
func BenchmarkRecorderCounters(b *testing.B) {
	var r Recorder
	for i := range 100_000 {
		r.Begin()
		r.End(200, time.Duration(i%5000)*37*time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Counters()
	}
}

func TestRecorderDoesNotAllocate(t *testing.T) {
	var r Recorder
	if n := testing.AllocsPerRun(1000, func() {
		r.Begin()
		r.End(503, 7*time.Millisecond)
	}); n != 0 {
		t.Fatalf("recording a request allocates %v times, want 0", n)
	}
}
