package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// History gap refill. What an aggregator publishes live-only (liveonly.go)
// reaches live subscribers but not the history stream, which has no quorum.
// So it also keeps each such snapshot, as sent, and the rollups of the
// minutes that closed meanwhile (and any snapshot or rollup a leader
// published whose write its stream did not acknowledge, such as its last
// seconds before the outage fenced it), in a buffer bounded by RefillWindow and
// RefillBytes (the oldest are dropped beyond them, and counted). Once the
// lease store works again it writes them into the history, oldest first,
// with the message ids they were published with, so that the stream stores
// each second once however many aggregators refill it (every live-only
// publisher does) and whatever it stored live.
//
// Snapshots are refilled on proto.RefillSubject, which the history stream
// files under the snapshot subject: live subscribers (edges, the other
// aggregators' books) never see an old second arrive after newer ones.
// Rollups go to their usual subject, as a new leader's late rollups do.
//
// The refill runs on a goroutine of its own with a JetStream publish per
// message, never through the tick's asynchronous publisher, so a tick never
// waits for it. A write that fails (a second outage) puts the rest back and
// the refill resumes once the store works again. The history records a
// refilled second up to RefillWindow late; readers allow for that
// (history.MaxRefillLag).

// Defaults of the refill buffer.
const (
	DefaultRefillWindow = 15 * time.Minute
	DefaultRefillBytes  = 64 << 20
	// MaxRefillWindow keeps every refilled snapshot and rollup (a rollup is
	// stamped with the start of its minute, and kept from its end) within
	// history.MaxRefillLag of its time.
	MaxRefillWindow = history.MaxRefillLag - 2*time.Minute
)

// refillWindowCap refuses a RefillWindow beyond MaxRefillWindow.
func refillWindowCap(w time.Duration) error {
	if w > MaxRefillWindow {
		return fmt.Errorf("RefillWindow %s exceeds %s: history readers look for refilled snapshots only %s late", w, MaxRefillWindow, history.MaxRefillLag)
	}
	return nil
}

// Pacing of the refill writes.
const (
	refillBatch      = 256 // messages taken between checks of the store
	refillTimeout    = 2 * time.Second
	refillRetryFirst = time.Second
	refillRetryMax   = 30 * time.Second
)

// gapEntry is one message to refill: a snapshot or rollup, encoded.
type gapEntry struct {
	subject, id string
	data        []byte
	sec         int64 // the snapshot's (rollup's) time, Unix seconds
	rollup      bool
	liveOnly    bool // published live-only (else: a write that failed)
}

// gapBuffer holds what to refill, oldest first. It is safe for concurrent
// use: the tick adds, the refill goroutine takes and puts back.
type gapBuffer struct {
	window   time.Duration
	maxBytes int

	mu      sync.Mutex
	entries []gapEntry
	bytes   int
	rollups map[string]bool // ids of the rollups held, added once
	dropped uint64
}

func newGapBuffer(window time.Duration, maxBytes int) *gapBuffer {
	return &gapBuffer{window: window, maxBytes: maxBytes, rollups: make(map[string]bool)}
}

func (e *gapEntry) size() int { return len(e.data) + len(e.id) + len(e.subject) }

// add appends e and drops what no longer fits, oldest first.
func (g *gapBuffer) add(e gapEntry, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.rollup {
		g.rollups[e.id] = true
	}
	g.entries = append(g.entries, e)
	g.bytes += e.size()
	g.trimLocked(now)
}

// hasRollup reports whether the rollup with message id id is held.
func (g *gapBuffer) hasRollup(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rollups[id]
}

// trimLocked drops entries from the front while the buffer is over its
// bytes, or the front is older than the window.
func (g *gapBuffer) trimLocked(now time.Time) {
	oldest := now.Add(-g.window).Unix()
	n := 0
	for n < len(g.entries) && (g.bytes > g.maxBytes || g.entries[n].sec < oldest) {
		g.forgetLocked(&g.entries[n])
		n++
	}
	if n > 0 {
		g.dropped += uint64(n)
		clear(g.entries[:n])
		g.entries = g.entries[n:]
	}
}

func (g *gapBuffer) forgetLocked(e *gapEntry) {
	g.bytes -= e.size()
	if e.rollup {
		delete(g.rollups, e.id)
	}
}

// take removes and returns up to n entries from the front, after dropping
// those too old to refill.
func (g *gapBuffer) take(n int, now time.Time) []gapEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.trimLocked(now)
	n = min(n, len(g.entries))
	out := make([]gapEntry, n)
	copy(out, g.entries[:n])
	for i := range out {
		g.forgetLocked(&out[i])
	}
	clear(g.entries[:n])
	g.entries = g.entries[n:]
	return out
}

// putBack returns entries that could not be written to the front.
func (g *gapBuffer) putBack(es []gapEntry, now time.Time) {
	if len(es) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range es {
		g.bytes += es[i].size()
		if es[i].rollup {
			g.rollups[es[i].id] = true
		}
	}
	g.entries = append(es[:len(es):len(es)], g.entries...)
	g.trimLocked(now)
}

func (g *gapBuffer) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.entries)
}

func (g *gapBuffer) droppedTotal() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dropped
}

// keepLiveOnly records a snapshot just published live-only, for the refill.
func (a *Aggregator) keepLiveOnly(s *proto.Snapshot, id string, data []byte) {
	a.gap.add(gapEntry{subject: proto.RefillSubject(s.Scope), id: id, data: data, sec: s.Time.Unix(), liveOnly: true}, a.cfg.Now())
}

// keepUnwritten records a snapshot or rollup whose write to its stream
// failed (the leader's last seconds before an outage fenced it, or a
// rollup), for the refill. Without the election there is no refill (nor
// live-only publishing): nothing is kept.
func (a *Aggregator) keepUnwritten(msg *nats.Msg) {
	if a.elector == nil {
		return
	}
	id := msg.Header.Get(jetstream.MsgIDHeader)
	_, at, ok := strings.Cut(id, "@")
	sec, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return
	}
	e := gapEntry{subject: msg.Subject, id: id, data: msg.Data, sec: sec}
	if rest, ok := strings.CutPrefix(msg.Subject, proto.SnapshotSubjectPrefix+"."); ok {
		e.subject = proto.RefillSubjectPrefix + "." + rest
	} else {
		e.rollup = true
		if a.gap.hasRollup(id) {
			return
		}
	}
	a.gap.add(e, a.cfg.Now())
}

// keepRollups records the rollups of the minutes closed while publishing
// live-only (the book keeps them pending, for a few minutes only).
func (a *Aggregator) keepRollups(rolls []proto.Snapshot, now time.Time) {
	for i := range rolls {
		r := &rolls[i]
		id := messageID(r)
		if a.gap.hasRollup(id) {
			continue
		}
		data, err := r.Encode()
		if err != nil {
			a.writeFailed(fmt.Errorf("encode rollup %s: %w", id, err))
			continue
		}
		a.gap.add(gapEntry{subject: proto.RollupSubject(r.Scope), id: id, data: data, sec: r.Time.Unix(), rollup: true, liveOnly: true}, now)
	}
}

// kickRefill wakes the refill when there is something to write and the
// lease store works. It runs on the tick goroutine.
func (a *Aggregator) kickRefill() {
	if a.elector == nil || a.liveOnly.Load() || a.elector.StoreUnavailable() || a.gap.len() == 0 {
		return
	}
	select {
	case a.refillKick <- struct{}{}:
	default:
	}
}

// refillRun is one refill, possibly interrupted by relapses of the outage:
// what was written so far, logged once.
type refillRun struct {
	snapshots, rollups, duplicates int
	from, to                       int64
	outage                         bool // some of it was published live-only
}

func (r *refillRun) pending() bool { return r.snapshots+r.rollups > 0 }

func (r *refillRun) note(e *gapEntry, dup bool) {
	r.outage = r.outage || e.liveOnly
	if dup {
		r.duplicates++
	}
	if e.rollup {
		r.rollups++
		return
	}
	if r.snapshots == 0 || e.sec < r.from {
		r.from = e.sec
	}
	r.to = max(r.to, e.sec)
	r.snapshots++
}

// refillLoop writes the buffer into the history whenever kicked, until ctx
// ends. It runs on a goroutine of Run's.
//
// It says so once per outage: "history refilled" when the buffer is empty
// and the elector considers the outage over (after its "lease store
// recovered"), so that the relapses of a recovering cluster make one line.
// Refills of writes that failed outside an outage are told once a minute
// at most.
func (a *Aggregator) refillLoop(ctx context.Context) {
	var run refillRun
	retry := refillRetryFirst
	dropped := a.gap.droppedTotal()
	// While a finished refill waits for the outage to end, to be told.
	check := time.NewTicker(time.Second)
	defer check.Stop()
	for {
		var checkC <-chan time.Time
		if run.pending() {
			checkC = check.C
		}
		var err error
		select {
		case <-ctx.Done():
			return
		case <-checkC:
			if a.gap.len() > 0 {
				continue // the next kick writes it
			}
		case <-a.refillKick:
			err = a.refill(ctx, &run)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			retry = refillRetryFirst
			if run.pending() && !a.elector.InOutage() && (run.outage || a.refilledLog.allowQuiet(a.cfg.Now())) {
				msg := "history refilled"
				if !run.outage {
					msg = "unacknowledged history writes refilled"
				}
				d := a.gap.droppedTotal()
				a.log.Info(msg,
					"snapshots", run.snapshots, "from", time.Unix(run.from, 0).UTC(), "to", time.Unix(run.to, 0).UTC(),
					"rollups", run.rollups, "already_stored", run.duplicates, "dropped", d-dropped)
				dropped, run = d, refillRun{}
			}
			continue
		}
		a.metrics.refillErrors.Inc()
		if ok, suppressed := a.refillLog.allow(a.cfg.Now()); ok {
			a.log.Warn("refill history; resuming when the store works", "err", err, "pending", a.gap.len(), "retry_in", retry, "suppressed", suppressed)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, refillRetryMax)
	}
}

// refill writes the buffer, a batch at a time, until it is empty, the store
// fails again, or live-only publishing resumes.
func (a *Aggregator) refill(ctx context.Context, run *refillRun) error {
	for {
		if a.liveOnly.Load() || a.elector.StoreUnavailable() {
			return errors.New("the lease store is unavailable again")
		}
		batch := a.gap.take(refillBatch, a.cfg.Now())
		if len(batch) == 0 {
			return nil
		}
		for i := range batch {
			e := &batch[i]
			dup, err := a.refillOne(ctx, e)
			if err != nil {
				a.gap.putBack(batch[i:], a.cfg.Now())
				return fmt.Errorf("refill %s: %w", e.id, err)
			}
			run.note(e, dup)
			a.metrics.refilled.Inc()
		}
	}
}

// refillOne writes one message and reports whether the stream had it
// already.
func (a *Aggregator) refillOne(ctx context.Context, e *gapEntry) (dup bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, refillTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: e.subject, Data: e.data, Header: nats.Header{}}
	msg.Header.Set(PublisherHeader, a.cfg.ID)
	ack, err := a.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.id), jetstream.WithRetryAttempts(0))
	if err != nil {
		return false, err
	}
	return ack.Duplicate, nil
}

// messageID is a snapshot's or rollup's Nats-Msg-Id: scope@second, so that
// the streams store a scope's second (minute) once.
func messageID(s *proto.Snapshot) string {
	return s.Scope.String() + "@" + strconv.FormatInt(s.Time.Unix(), 10)
}
