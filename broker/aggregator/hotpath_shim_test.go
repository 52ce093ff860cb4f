package aggregator

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

// benchTick is one tick as the leader runs it, without encoding or
// publishing: the second's snapshots, and the book's record of each.
func benchTick(m *Merger, bk *book, buf []proto.Snapshot, now time.Time, mode InstanceSnapshots, wanted map[string]struct{}) []proto.Snapshot {
	var want func(string) bool
	if mode == InstanceSnapshotsOnDemand {
		want = func(name string) bool { _, ok := wanted[name]; return ok }
	}
	buf = m.AppendSnapshotsFor(buf[:0], now, want)
	for i := range buf {
		bk.claim(&buf[i])
	}
	bk.close(now)
	return buf
}

func benchConn(b *testing.B) *nats.Conn {
	_, nc := natstest.StartTest(b)
	return nc
}
