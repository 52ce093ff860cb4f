package aggregator

import (
	"cmp"
	"slices"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// replayBuffer keeps, per instance, the newest report of its current boot
// and of the boot before, as this aggregator received them. Reports are
// cumulative, so these two say everything the instance counted in those
// boots: after a takeover restores the merge state the last leader
// persisted, replaying them adds whatever that leader applied after its last
// state write (or never applied), and whatever is already in the state is a
// duplicate by sequence number. Keeping the previous boot's last report is
// what makes a failover exact when a gateway restarted moments before: its
// final report would otherwise be lost with the old leader.
//
// Not safe for concurrent use; the Aggregator guards it with its merge
// mutex, so that the buffer and the merger see reports in the same order.
type replayBuffer struct {
	insts map[string]*replayEntry
}

type replayEntry struct {
	prev, cur *bufferedReport // cur is nil only before the first report
}

type bufferedReport struct {
	r  proto.Report // without its histogram, which is packed in hist
	at time.Time    // when it was received, on the aggregator's clock
	// hist is r's histogram in packHist form, nil when it had none: a
	// quarter of its size, and r's own may be a decoder's, reused.
	hist []byte
}

// set stores r, reusing br's arrays.
func (br *bufferedReport) set(r *proto.Report, at time.Time) {
	hist := br.hist[:0]
	if r.LatencyHistogram != nil {
		hist = packHist(hist, r.LatencyHistogram)
	} else {
		hist = nil
	}
	buckets := append(br.r.LatencyBuckets[:0], r.LatencyBuckets...)
	br.r, br.at, br.hist = *r, at, hist
	br.r.LatencyBuckets, br.r.LatencyHistogram = buckets, nil
}

// report is the stored report with its histogram.
func (br *bufferedReport) report() proto.Report {
	r := br.r
	if br.hist != nil {
		h := unpackHist(br.hist)
		r.LatencyHistogram = &h
	}
	return r
}

func newReplayBuffer() *replayBuffer {
	return &replayBuffer{insts: make(map[string]*replayEntry)}
}

// add records a decoded, valid report received at at. It keeps nothing of
// r's arrays.
func (b *replayBuffer) add(r proto.Report, at time.Time) {
	e := b.insts[r.Instance]
	if e == nil {
		e = &replayEntry{}
		b.insts[r.Instance] = e
	}
	switch {
	case e.cur != nil && r.BootID == e.cur.r.BootID:
		if r.Seq > e.cur.r.Seq {
			e.cur.set(&r, at)
		}
	case e.prev != nil && r.BootID == e.prev.r.BootID:
		// A late report of the previous boot: keep the newest of it.
		if r.Seq > e.prev.r.Seq {
			e.prev.set(&r, at)
		}
	case e.cur != nil && r.StartTime.Before(e.cur.r.StartTime):
		// A boot older than both kept: replaying it would count it again.
	default:
		next := e.prev // its arrays are reused; it is dropped
		if next == nil {
			next = &bufferedReport{}
		}
		next.set(&r, at)
		e.prev, e.cur = e.cur, next
	}
}

// prune drops instances whose newest report is older than forgetAfter,
// as the merger forgets them.
func (b *replayBuffer) prune(now time.Time, forgetAfter time.Duration) {
	for name, e := range b.insts {
		if now.Sub(e.cur.at) > forgetAfter {
			delete(b.insts, name)
		}
	}
}

// len is the number of buffered reports.
func (b *replayBuffer) len() int {
	n := 0
	for _, e := range b.insts {
		n++
		if e.prev != nil {
			n++
		}
	}
	return n
}

// replayStats says what a replay did.
type replayStats struct {
	reports, applied, stale int
}

// replay applies the buffered reports to m: per instance the previous
// boot's last report before the current boot's, instances in name order (they
// are independent). Each report is applied at its receipt time.
func (b *replayBuffer) replay(m *Merger) replayStats {
	names := make([]string, 0, len(b.insts))
	for name := range b.insts {
		names = append(names, name)
	}
	slices.SortFunc(names, cmp.Compare)
	var st replayStats
	for _, name := range names {
		e := b.insts[name]
		for _, br := range [...]*bufferedReport{e.prev, e.cur} {
			if br == nil {
				continue
			}
			st.reports++
			if m.staleBoot(&br.r) {
				st.stale++
				continue
			}
			switch m.Apply(br.report(), br.at) {
			case OutcomeApplied, OutcomeNewInstance, OutcomeResetBoot, OutcomeResetDecrease:
				st.applied++
			}
		}
	}
	return st
}
