package aggregator

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

// BenchmarkRefill writes 1000 buffered live-only snapshots into the history
// stream of an embedded node (one op = one snapshot); BenchmarkRefillBaseline
// is the same writes as a bare JetStream publish loop, the floor the refill
// is paced by.
func BenchmarkRefill(b *testing.B) { benchRefill(b, false) }

func BenchmarkRefillBaseline(b *testing.B) { benchRefill(b, true) }

func benchRefill(b *testing.B, bare bool) {
	_, nc := natstest.StartTest(b)
	a, err := New(Config{NATS: nc, Logger: quiet, ID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := history.EnsureStream(ctx, a.js, history.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	sec := time.Now().Add(-10 * time.Minute).Unix()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		entries := make([]gapEntry, 0, batch)
		for range batch {
			s := gapSnap(sec)
			sec++
			data, err := s.Encode()
			if err != nil {
				b.Fatal(err)
			}
			if bare {
				entries = append(entries, gapEntry{subject: proto.RefillSubject(s.Scope), id: messageID(&s), data: data})
			} else {
				a.keepLiveOnly(&s, messageID(&s), data)
			}
		}
		b.StartTimer()
		if bare {
			for i := range entries {
				e := &entries[i]
				if _, err := a.js.Publish(ctx, e.subject, e.data, jetstream.WithMsgID(e.id)); err != nil {
					b.Fatal(err)
				}
			}
			continue
		}
		var run refillRun
		if err := a.refill(ctx, &run); err != nil || run.snapshots != batch {
			b.Fatalf("refill: %v, %+v", err, run)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/batch, "µs/snapshot")
}
