//go:build linux

package edge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// BenchmarkHistorySeries computes the default history answer (all six
// metrics, 1 h in 720 points) from a full in-memory ring, with the frame
// cache defeated, as the first request of each second does; "cached" is
// every other request in that second.
func BenchmarkHistorySeries(b *testing.B) {
	e := bareEdge(b)
	end := time.Now().UTC().Truncate(time.Second)
	for _, s := range secondly(proto.ClusterScope(), end, 3600, 1) {
		e.hist.add(s)
	}
	sh := e.hist.cluster
	ctx := context.Background()
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !cached {
					sh.gen.Add(1)
				}
				frames, err := e.hist.series(ctx, sh, end, 3600, 720, proto.AllMetrics)
				if err != nil || len(frames) != proto.NumMetrics {
					b.Fatalf("series: %d frames, %v", len(frames), err)
				}
			}
		})
	}
}

// BenchmarkReplay collects and encodes a replay of n snapshots from the
// ring, as a reconnecting client's since does.
func BenchmarkReplay(b *testing.B) {
	e := bareEdge(b)
	end := time.Now().UTC().Truncate(time.Second)
	for _, s := range secondly(proto.ClusterScope(), end, 3600, 1) {
		e.hist.add(s)
	}
	ctx := context.Background()
	for _, n := range []int{30, 3599} { // the ring must reach back to since
		b.Run(fmt.Sprintf("snapshots=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			since := end.Add(-time.Duration(n) * time.Second)
			var bytes int
			for b.Loop() {
				r, err := e.hist.replay(ctx, e.hist.cluster, end, since)
				if err != nil || len(r.snaps) != n {
					b.Fatalf("replay: %d snapshots, %v", len(r.snaps), err)
				}
				bytes = len(replayBlob(nil, r.snaps, proto.AllMetrics))
			}
			b.ReportMetric(float64(bytes)/float64(n), "B/snapshot")
		})
	}
}

// BenchmarkSubscribeScope is the poller's cost of a subscription message
// that switches a connection between two scopes held live (no history):
// parse, pin, apply, reschedule.
func BenchmarkSubscribeScope(b *testing.B) {
	e := bareEdge(b)
	now := time.Now()
	e.scopes.store(snap(now, 1))
	e.scopes.store(scoped(snap(now, 2), regionEU))
	s := newShard(e)
	conns, _ := tcpConns(b, e, s, 1)
	c := conns[0]
	msgs := [][]byte{[]byte(`{"region":"eu","metrics":["requests_total"]}`), []byte(`{"interval_seconds":1}`)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := c.onText(msgs[i%2]); err != nil {
			b.Fatal(err)
		}
		s.drainInbox()
		i++
	}
	if c.scope.pins.Load() != 1 {
		b.Fatalf("pins leaked: %d", c.scope.pins.Load())
	}
}
