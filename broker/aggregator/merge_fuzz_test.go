package aggregator

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// FuzzApply feeds a Merger arbitrary report sequences — restarts, counter
// decreases, duplicates, reordering, region moves, final reports, silences
// long enough to go stale or be forgotten, state round trips — and checks
// after every step that the cluster's request counters never decrease, that
// success + error == total in every snapshot, and that every snapshot is
// valid.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 5, 0, 0, 0, 0, 2, 5, 1, 1, 1, 0, 1, 7})
	f.Add([]byte{0, 0, 0, 0, 1, 200, 0, 0, 0, 0, 2, 0x85, 0, 0, 0, 1, 1, 9, 250, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1, 2, 2, 3, 3, 255, 255, 255, 255, 255, 255, 0, 3, 1, 0, 0, 0})
	f.Fuzz(applySequence)
}

func applySequence(t *testing.T, data []byte) {
	m := NewMerger(MergerConfig{ForgetAfter: 20 * time.Second, AvgWindow: 3 * time.Second})
	now := t0
	// The fuzzer's view of each (instance, boot): the last counters it sent.
	type key struct{ inst, boot uint8 }
	type sent struct {
		seq, total, errs uint64
	}
	last := map[key]sent{}
	var prev proto.Snapshot
	for len(data) >= 6 {
		op := data[:6]
		data = data[6:]
		switch {
		case op[0] >= 250: // silence: advance the clock by up to 63s
			now = now.Add(time.Duration(op[1]&63) * time.Second)
		case op[0] >= 240: // state round trip through JSON
			b, err := json.Marshal(m.State())
			if err != nil {
				t.Fatal(err)
			}
			var st State
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			n := NewMerger(m.cfg)
			if err := n.Restore(st); err != nil {
				t.Fatalf("restore own state: %v", err)
			}
			m = n
		default:
			inst, boot := op[0]%4, op[1]%3
			k := key{inst, boot}
			s := last[k]
			s.seq = uint64(int64(s.seq) + int64(op[2]%4) - 1) // repeat, next, skip, or go back
			if s.seq == 0 || s.seq > math.MaxUint32 {
				s.seq = 1
			}
			add := uint64(op[3])
			if op[4]&0x80 != 0 && s.total >= add { // a counter decrease
				s.total, s.errs = s.total-add, 0
			} else {
				s.total += add
				s.errs += uint64(op[4]&0x7f) % (add + 1)
			}
			if op[4]&0x40 != 0 {
				s.total <<= 40 // huge counts, to reach the overflow guard
				s.errs <<= 40
			}
			s.errs = min(s.errs, s.total)
			last[k] = s
			r := rp{
				inst: "gw-" + string(rune('a'+inst)), region: "r" + string(rune('0'+op[5]%3)),
				boot: "b" + string(rune('0'+boot)), seq: s.seq, total: s.total, errs: s.errs,
				durMs: s.total * uint64(op[5]), active: int64(op[5] >> 4), final: op[5]&8 != 0,
				interval: time.Duration(1+op[1]>>4) * time.Second,
			}.report(now)
			if o := m.Apply(r, now); o == 0 || o > OutcomeRejected {
				t.Fatalf("outcome %d", o)
			}
			now = now.Add(time.Duration(op[2]>>2) * 10 * time.Millisecond)
		}
		snaps := m.Snapshots(now)
		checkInvariants(t, m, snaps)
		c := snaps[0]
		if c.RequestsTotal < prev.RequestsTotal || c.RequestsSuccess < prev.RequestsSuccess || c.RequestsError < prev.RequestsError {
			t.Fatalf("cluster counters decreased: %+v -> %+v", prev, c)
		}
		if c.RequestsSuccess+c.RequestsError != c.RequestsTotal {
			t.Fatalf("success + error != total: %+v", c)
		}
		prev = c
	}
}
