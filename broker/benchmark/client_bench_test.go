//go:build linux

package benchmark

import (
	"bytes"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// BenchmarkParseFrames is the client's per-read work: one read holding the
// Snapshot frames of a 10 ms slot (100 subscribers' worth on one socket
// would never happen, but the cost per frame is what matters).
func BenchmarkParseFrames(b *testing.B) {
	s := stubSnapshot(time.Now(), 7)
	frame := serverFrame(ws.OpText, proto.AppendSnapshotEvent(nil, &s, proto.AllMetrics))
	data := bytes.Repeat(frame, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		n, err := parseFrames(data, func(op ws.OpCode, p []byte) bool {
			return eventKindOf(p) == kindSnapshot
		})
		if err != nil || n != len(data) {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkClientSnapshot is the client's accounting of one Snapshot:
// its tick, its lag, its age (timestamp parsed once per second and reused).
func BenchmarkClientSnapshot(b *testing.B) {
	cl := &client{base: time.Now()}
	cl.w0.Store(0)
	r := &reader{cl: cl, samples: make([]sample, 0, 1<<20)}
	c := &subConn{interval: int64(time.Second), t0: 0}
	s := stubSnapshot(time.Now(), 7)
	payload := proto.AppendSnapshotEvent(nil, &s, proto.AllMetrics)
	b.ReportAllocs()
	now := int64(time.Second)
	for b.Loop() {
		r.snapshot(c, payload, now)
		now += int64(time.Second)
		if len(r.samples) == cap(r.samples) {
			r.samples = r.samples[:0]
		}
	}
	if r.t.BadTimestamps != 0 || r.t.Duplicates != 0 {
		b.Fatalf("tally %+v", r.t)
	}
}
