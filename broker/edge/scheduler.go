package edge

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Scheduling: no ticker and no goroutine per subscription. Each shard owns
// a timing wheel of 10 ms slots; a connection sits in exactly one slot (the
// earliest of its due times: next snapshot, heartbeat, ping, idle deadline,
// write deadline) through intrusive list links, so rescheduling is two
// pointer updates and never allocates. One timer per shard sleeps until the
// next occupied slot. A connection's snapshots fall at t0 + k·interval,
// where t0 is its first snapshot, so connections spread over the interval
// as they arrived; when more than slotCap would land in one slot (a burst
// of connections, or many waiting for the first snapshot), the phase of the
// newcomer is moved to the next slot with room, which keeps the work per
// slot, and thus the tick-to-wire lag, bounded.
//
// Wheel state belongs to the shard goroutine. Other goroutines talk to it
// through the inbox (kick), which carries adds, subscription changes,
// deadline changes and closes.

const (
	slotNanos = int64(10 * time.Millisecond)
	wheelBits = 13
	wheelSize = 1 << wheelBits // 81.92 s: a 60 s interval fits in one turn
	wheelMask = wheelSize - 1
	// slotCap is how many connections one slot of one shard takes before
	// newcomers' phases move on: about 1 ms of writes.
	slotCap = 128
	// lookahead bounds the search for the next occupied slot when sleeping.
	lookahead = 100
	never     = math.MaxInt64
)

// inboxOp is a request to a shard about one of its connections.
type inboxOp uint8

const (
	opAdd        inboxOp = iota + 1 // new connection
	opSubChanged                    // subscription replaced: recompute the next snapshot
	opResched                       // a deadline moved (output queued, closing)
	opClosed                        // unlink
)

type inboxItem struct {
	c  *conn
	op inboxOp
}

type shard struct {
	e       *Edge
	slots   [wheelSize]*conn
	load    [wheelSize]uint32
	count   int
	cur     int64 // the next tick to process
	waiting []*conn
	// waitGen is the scopes' firstGen when the waiting connections were
	// last checked; waitDirty asks for a check regardless.
	waitGen   uint64
	waitDirty bool

	inboxMu sync.Mutex
	inbox   []inboxItem
	spare   []inboxItem
	wakeCh  chan struct{}
}

func newShard(e *Edge) *shard {
	return &shard{e: e, wakeCh: make(chan struct{}, 1)}
}

// tickOf is the slot of a periodic due time (nearest: at most 5 ms early).
func tickOf(t int64) int64 { return (t + slotNanos/2) / slotNanos }

// ceilTick is the slot of a deadline (never early).
func ceilTick(t int64) int64 { return (t + slotNanos - 1) / slotNanos }

// kick queues op for c and wakes the shard.
func (s *shard) kick(c *conn, op inboxOp) {
	s.inboxMu.Lock()
	s.inbox = append(s.inbox, inboxItem{c: c, op: op})
	s.inboxMu.Unlock()
	s.wake()
}

func (s *shard) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// run drives the wheel until stop.
func (s *shard) run(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	s.cur = s.e.mono() / slotNanos
	for {
		s.drainInbox()
		s.startWaiting()
		s.advance()
		var timerC <-chan time.Time
		if next, ok := s.nextOccupied(); ok {
			d := time.Duration(next*slotNanos - s.e.mono())
			if d <= 0 {
				continue
			}
			timer.Reset(d)
			timerC = timer.C
		}
		select {
		case <-stop:
			return
		case <-s.wakeCh:
		case <-timerC:
		}
	}
}

// nextOccupied is the tick to wake up at: the next occupied slot within
// lookahead, else the end of the lookahead (entries may be further out).
func (s *shard) nextOccupied() (int64, bool) {
	if s.count == 0 {
		return 0, false
	}
	for k := s.cur; k < s.cur+lookahead; k++ {
		if s.slots[k&wheelMask] != nil {
			return k, true
		}
	}
	return s.cur + lookahead, true
}

// advance processes every slot up to now.
func (s *shard) advance() {
	nowTick := s.e.mono() / slotNanos
	for s.cur <= nowTick {
		if s.count == 0 {
			s.cur = nowTick + 1
			return
		}
		k := s.cur
		s.cur++ // first: whatever is linked while processing k goes to k+1 or later
		s.processSlot(k)
	}
}

func (s *shard) processSlot(k int64) {
	i := k & wheelMask
	c := s.slots[i]
	if c == nil {
		return
	}
	s.slots[i] = nil
	s.load[i] = 0
	for c != nil {
		next := c.next
		c.next, c.prev, c.linked = nil, nil, false
		s.count--
		if c.due > k {
			s.link(c, c.due) // a later turn of the wheel
		} else {
			s.fire(c, k)
		}
		c = next
	}
}

// link puts c in the slot of tick due (not before the next processed one).
func (s *shard) link(c *conn, due int64) {
	if due < s.cur {
		due = s.cur
	}
	c.due = due
	i := due & wheelMask
	c.prev = nil
	c.next = s.slots[i]
	if c.next != nil {
		c.next.prev = c
	}
	s.slots[i] = c
	c.linked = true
	s.load[i]++
	s.count++
}

func (s *shard) unlink(c *conn) {
	if !c.linked {
		return
	}
	i := c.due & wheelMask
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.slots[i] = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.next, c.prev, c.linked = nil, nil, false
	if s.load[i] > 0 {
		s.load[i]--
	}
	s.count--
}

// place returns the first tick from tickOf(t) on, within maxShift slots,
// whose slot has room; the unshifted tick if none has.
func (s *shard) place(t int64, maxShift int64) int64 {
	k := max(tickOf(t), s.cur)
	for d := int64(0); d <= maxShift; d++ {
		if s.load[(k+d)&wheelMask] < slotCap {
			return k + d
		}
	}
	return k
}

// drainInbox applies the requests of other goroutines.
func (s *shard) drainInbox() {
	s.inboxMu.Lock()
	items := s.inbox
	s.inbox, s.spare = s.spare[:0], nil
	s.inboxMu.Unlock()
	for i, it := range items {
		s.apply(it.c, it.op)
		items[i] = inboxItem{}
	}
	s.inboxMu.Lock()
	if s.spare == nil && cap(items) <= 4096 {
		s.spare = items[:0]
	}
	s.inboxMu.Unlock()
}

func (s *shard) apply(c *conn, op inboxOp) {
	e := s.e
	now := e.mono()
	if op == opClosed {
		s.unlink(c)
		s.stopWaiting(c)
		return
	}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	switch op {
	case opAdd:
		c.added = true
		interval := int64(c.sub.IntervalSeconds) * int64(time.Second)
		s.takeReplay(c, now)
		if c.sentSnap {
			// The first snapshot went out with the handshake; keep its
			// phase unless the slot is crowded.
			k := s.place(c.lastSnap+interval, interval/4/slotNanos)
			c.nextSnap = k * slotNanos
		} else {
			c.waiting = true
			c.waitIdx = int32(len(s.waiting))
			s.waiting = append(s.waiting, c)
			s.waitDirty = true
		}
		c.nextBeat = now + rand.Int64N(int64(e.cfg.HeartbeatInterval))
		c.nextPing = now + rand.Int64N(int64(e.cfg.PingInterval))
	case opSubChanged:
		if !c.added {
			break // opAdd follows and reads the new subscription
		}
		if s.takeReplay(c, now) {
			s.stopWaiting(c)
		}
		if c.waiting {
			s.waitDirty = true // the new scope may have a snapshot
		}
		if c.sentSnap {
			next := c.lastSnap + int64(c.sub.IntervalSeconds)*int64(time.Second)
			c.nextSnap = max(next, now)
		}
	case opResched:
		if !c.added {
			break
		}
	}
	if !c.added {
		c.mu.Unlock()
		return
	}
	due := s.dueLocked(c)
	c.mu.Unlock()
	s.unlink(c)
	s.link(c, due)
}

// takeReplay makes a replay just queued count as the snapshot of now: the
// next live one is due an interval later (with c.mu held).
func (s *shard) takeReplay(c *conn, now int64) bool {
	if c.work == nil || !c.work.replayDone {
		return false
	}
	c.work.replayDone = false
	c.lastSnap, c.sentSnap = now, true
	return true
}

// startWaiting schedules connections that waited for their scope's first
// snapshot, spread over the next second so that they do not all write in
// one slot. It looks only when a scope got its first snapshot or a waiting
// connection changed.
func (s *shard) startWaiting() {
	if len(s.waiting) == 0 {
		return
	}
	gen := s.e.scopes.firstGen.Load()
	if gen == s.waitGen && !s.waitDirty {
		return
	}
	s.waitGen, s.waitDirty = gen, false
	now := s.e.mono()
	kept := s.waiting[:0]
	for _, c := range s.waiting {
		c.mu.Lock()
		if c.scope.latest.Load() == nil {
			c.mu.Unlock()
			c.waitIdx = int32(len(kept))
			kept = append(kept, c)
			continue
		}
		c.waiting = false
		k := s.place(now, lookahead)
		c.nextSnap = k * slotNanos
		c.phased = true
		due := s.dueLocked(c)
		c.mu.Unlock()
		s.unlink(c)
		s.link(c, due)
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
}

func (s *shard) stopWaiting(c *conn) {
	if !c.waiting {
		return
	}
	c.waiting = false
	last := s.waiting[len(s.waiting)-1]
	s.waiting[c.waitIdx] = last
	last.waitIdx = c.waitIdx
	s.waiting[len(s.waiting)-1] = nil
	s.waiting = s.waiting[:len(s.waiting)-1]
}

// dueLocked is the tick of c's earliest due time.
func (s *shard) dueLocked(c *conn) int64 {
	cfg := &s.e.cfg
	due := min(tickOf(c.nextBeat), tickOf(c.nextPing), ceilTick(c.lastRead.Load()+int64(cfg.IdleTimeout)))
	if c.expires != 0 && c.state == stateOpen {
		due = min(due, ceilTick(c.expires))
	}
	if (c.sentSnap || c.phased) && c.state == stateOpen {
		due = min(due, tickOf(c.nextSnap))
	}
	if q := c.q; q != nil {
		if len(q.frames) > 0 {
			due = min(due, ceilTick(q.lastProgress+int64(cfg.WriteTimeout)))
		}
		if c.state == stateClosing && q.closeDeadline != 0 {
			due = min(due, ceilTick(q.closeDeadline))
		}
	}
	return due
}

// fire does whatever is due for c at tick k and reschedules it.
func (s *shard) fire(c *conn, k int64) {
	e := s.e
	cfg := &e.cfg
	now := e.mono()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state == stateClosed:
		return
	case c.state == stateClosing && c.q.closeDeadline != 0 && now >= c.q.closeDeadline:
		c.closeLocked(c.q.reason)
		return
	case now-c.lastRead.Load() >= int64(cfg.IdleTimeout):
		e.m.idleTimeouts.Inc()
		if c.state == stateOpen {
			c.startCloseLocked(frameCloseIdle, reasonIdleTimeout, closeNow)
		} else {
			c.closeLocked(reasonIdleTimeout)
		}
		return
	case c.state == stateOpen && c.expires != 0 && now >= c.expires:
		// Linger, so that the 4401 close frame reaches the client rather
		// than a reset.
		c.startCloseLocked(frameCloseExpired, reasonTokenExpired, closeLinger)
		if c.state != stateClosed {
			s.link(c, s.dueLocked(c))
		}
		return
	case c.queued() > 0 && now-c.q.lastProgress >= int64(cfg.WriteTimeout):
		e.m.slowConsumers.Inc()
		if c.state == stateOpen {
			c.startCloseLocked(frameCloseWriteTime, reasonWriteTimeout, closeNow)
		} else {
			c.closeLocked(reasonWriteTimeout)
		}
		return
	}
	if c.state == stateOpen && (c.sentSnap || c.phased) && tickOf(c.nextSnap) <= k {
		s.deliverSnapshot(c, now)
	}
	if c.state == stateOpen && tickOf(c.nextBeat) <= k {
		c.enqueueLocked(e.beat.frame(cfg.Now()), false)
		c.nextBeat = nextPeriod(c.nextBeat, int64(cfg.HeartbeatInterval), now)
	}
	if c.state == stateOpen && tickOf(c.nextPing) <= k {
		c.enqueueLocked(framePing, false)
		c.nextPing = nextPeriod(c.nextPing, int64(cfg.PingInterval), now)
	}
	if c.state == stateClosed {
		return
	}
	s.link(c, s.dueLocked(c))
}

// deliverSnapshot writes the latest snapshot of c's scope in c's metric
// set and moves c's phase on by its interval. While a replay is pending the
// tick passes without a snapshot, and after one, a snapshot older than the
// last replayed is not sent.
func (s *shard) deliverSnapshot(c *conn, now int64) {
	e := s.e
	sf := c.scope.latest.Load()
	scheduled := c.nextSnap
	interval := int64(c.sub.IntervalSeconds) * int64(time.Second)
	c.lastSnap = scheduled
	c.sentSnap = true
	c.nextSnap = nextPeriod(scheduled, interval, now)
	if sf == nil {
		return
	}
	if w := c.work; w != nil && (w.holds > 0 || sf.snap.Time.Before(w.replayedUntil)) {
		return
	}
	c.noteStaleLocked(sf, e.cfg.Now(), e.cfg.StaleAfter)
	if c.enqueueLocked(sf.frame(c.sub.SnapshotMetrics()), true) {
		e.m.tickLag.Observe(float64(max(e.mono()-scheduled, 0)) / 1e9)
		e.m.deliveryLag.Observe(max(e.cfg.Now().Sub(sf.snap.Time), 0).Seconds())
	}
}

// nextPeriod is the first of prev + k·period (k ≥ 1) after now: missed
// periods (a stalled process) are skipped, the phase is kept.
func nextPeriod(prev, period, now int64) int64 {
	next := prev + period
	if next <= now {
		next += ((now-next)/period + 1) * period
	}
	return next
}
