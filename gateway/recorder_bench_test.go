package gateway

import (
	"testing"
	"time"
)

// BenchmarkRecorder measures recording one request (Begin + End). It must
// report 0 allocs/op.
func BenchmarkRecorder(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		var r Recorder
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r.Begin()
			r.End(200+i%400, time.Duration(i)*time.Microsecond)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var r Recorder
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				r.Begin()
				r.End(200+i%400, time.Duration(i)*time.Microsecond)
				i++
			}
		})
	})
}

// BenchmarkRecorderCounters measures one reading (a report's worth).
func BenchmarkRecorderCounters(b *testing.B) {
	var r Recorder
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
