package aggregator

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// FuzzClusterMerger feeds a ClusterMerger arbitrary region snapshots —
// reordered, repeated, from the past and the future, with counters that
// jump, fall or wrap, for regions that come and go, with state round trips
// — and checks after every tick that the cluster snapshot is valid and its
// request counters never decrease.
func FuzzClusterMerger(f *testing.F) {
	f.Add([]byte{0, 1, 10, 0, 0, 0, 0, 1, 1, 5, 0, 0, 0, 0, 2, 1, 3, 0, 0, 0, 0})
	f.Add([]byte{0, 1, 10, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 255, 40, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0})
	f.Add([]byte{254, 0, 0, 0, 0, 0, 0, 1, 2, 255, 255, 255, 255, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cm := NewClusterMerger(MergerConfig{AvgWindow: 3 * time.Second, MaxRegions: 3})
		now := t0
		var prev proto.Snapshot
		for len(data) >= 7 {
			op := data[:7]
			data = data[7:]
			switch op[0] {
			case 255: // time passes
				now = now.Add(time.Duration(op[1]) * time.Second / 4)
				continue
			case 254: // a restart from the persisted state
				st := cm.State()
				cm = NewClusterMerger(MergerConfig{AvgWindow: 3 * time.Second, MaxRegions: 3})
				if err := cm.Restore(st); err != nil {
					t.Fatalf("restore of its own state: %v", err)
				}
				continue
			}
			total := uint64(binary.LittleEndian.Uint32(op[3:7]))
			errs := total / uint64(op[2]%7+1)
			s := proto.Snapshot{
				Version: proto.SnapshotVersion, Scope: proto.RegionScope(string(rune('a' + op[0]%5))),
				Time:          now.Truncate(time.Second).Add(time.Duration(int8(op[1])) * time.Second),
				RequestsTotal: total, RequestsSuccess: total - errs, RequestsError: errs,
				DurationSumNanos: total * uint64(op[2]) * 1e6, DurationCount: total, Instances: int(op[1] % 4), ActiveConnections: int64(op[2]),
				SuccessRate: proto.SuccessRateOf(total-errs, total),
			}
			if op[2]&1 == 1 {
				var h proto.DenseHist
				h.Observe(time.Duration(op[2]) * time.Millisecond)
				hist := h.AppendSparse(nil)
				s.LatencyHistogram = &hist
			}
			cm.Add(&s, now)
			cm.Complete(now)
			snaps := cm.AppendSnapshots(nil, now)
			if len(snaps) != 1 {
				t.Fatalf("%d cluster snapshots", len(snaps))
			}
			c := snaps[0]
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.RequestsTotal < prev.RequestsTotal || c.RequestsSuccess < prev.RequestsSuccess || c.RequestsError < prev.RequestsError {
				t.Fatalf("cluster counters went down: %d/%d/%d after %d/%d/%d", c.RequestsTotal, c.RequestsSuccess, c.RequestsError,
					prev.RequestsTotal, prev.RequestsSuccess, prev.RequestsError)
			}
			prev = c
		}
	})
}
