//go:build linux

package benchmark

import (
	"bytes"
	"fmt"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// subConn is one subscriber. The dialer fills it in; from the hand-over on
// it belongs to its reader goroutine.
type subConn struct {
	id       int32 // subscriber index
	fd       int
	interval int64 // ns
	t0       int64 // mono ns: receipt of the first Snapshot, the phase
	t0Error  int64 // ns: how late t0 may be (request sent → first Snapshot)
	lastK    int64 // index of the last tick served; 0 is the first Snapshot
	idx      int32 // index in its reader's conns
	partial  []byte
	closed   bool
}

// sample is a Snapshot received for a tick in the window.
type sample struct {
	tick   int64 // mono ns of the scheduled tick
	lag    int64 // receipt − tick, ns
	age    int64 // receipt − snapshot timestamp, ns
	conn   int32 // index in the reader's conns
	hasAge bool
}

type readerAsk struct {
	end   int64
	reply chan readerAnswer
}

type readerAnswer struct {
	tally
	due     uint64
	samples []sample
	// worst is the latest delivery and short the first subscriber with
	// fewer deliveries than ticks, described for people ("" if none).
	worst, short string
	worstLag     int64
}

// reader is one epoll loop over its share of the subscribers. Everything
// but the channels is owned by its goroutine.
type reader struct {
	cl      *client
	epfd    int
	inbox   chan *subConn
	asks    chan readerAsk
	done    chan struct{}
	conns   []*subConn // by epoll event id
	buf     []byte
	events  [256]unix.EpollEvent
	samples []sample
	t       tally
	// The last timestamp parsed: every subscriber gets the same snapshot
	// within a second, so this spares nearly every parse.
	tsRaw []byte
	tsVal time.Time
}

// readWait is the epoll timeout: how soon a reader notices new sockets and
// questions while idle.
const readWait = 10 // ms

func newReader(cl *client) (*reader, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll: %w", err)
	}
	return &reader{
		cl: cl, epfd: epfd,
		inbox: make(chan *subConn, 256),
		asks:  make(chan readerAsk),
		done:  make(chan struct{}),
		buf:   make([]byte, 64<<10),
	}, nil
}

// hand gives c to the reader; false when the client is stopping.
func (r *reader) hand(c *subConn, stop <-chan struct{}) bool {
	select {
	case r.inbox <- c:
		return true
	case <-stop:
		return false
	}
}

// ask returns the reader's account of the ticks up to end.
func (r *reader) ask(end int64, stop <-chan struct{}) readerAnswer {
	a := readerAsk{end: end, reply: make(chan readerAnswer, 1)}
	select {
	case r.asks <- a:
		return <-a.reply
	case <-r.done:
	case <-stop:
	}
	var failed readerAnswer
	failed.note("reader stopped early")
	return failed
}

func (r *reader) run(stop <-chan struct{}) {
	defer close(r.done)
	wait := readWait
	var pause *time.Timer
	if r.cl.spec.Poll > 0 {
		// Polling: never blocked in epoll_wait, so the servers' writes
		// find no waiter to wake (see clientSpec.Poll).
		wait = 0
		pause = time.NewTimer(r.cl.spec.Poll)
		defer pause.Stop()
	}
	for {
		select {
		case <-stop:
			return
		case a := <-r.asks:
			a.reply <- r.answer(a.end)
		default:
		}
		r.takeInbox()
		n, err := unix.EpollWait(r.epfd, r.events[:], wait)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			r.t.note("epoll wait: %v", err)
			return
		}
		for i := range n {
			r.readable(r.conns[r.events[i].Fd])
		}
		if pause != nil && n < len(r.events) {
			pause.Reset(r.cl.spec.Poll)
			select {
			case <-stop:
				return
			case <-pause.C:
			}
		}
	}
}

func (r *reader) takeInbox() {
	for {
		select {
		case c := <-r.inbox:
			r.add(c)
		default:
			return
		}
	}
}

func (r *reader) add(c *subConn) {
	c.idx = int32(len(r.conns))
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.idx}
	r.conns = append(r.conns, c)
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		r.t.note("epoll add: %v", err)
		r.drop(c)
		return
	}
	if len(c.partial) > 0 { // frames that came with the first Snapshot
		r.consume(c, nil, r.cl.mono())
	}
}

// readable takes what one socket holds (level-triggered: more is reported
// again) and handles the complete frames in it.
func (r *reader) readable(c *subConn) {
	if c.closed {
		return
	}
	for {
		n, err := unix.Read(c.fd, r.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil || n == 0:
			r.t.ClosedByServer++
			r.t.note("connection closed by the server without a close frame: %v", errOrEOF(err))
			r.drop(c)
			return
		}
		r.consume(c, r.buf[:n], r.cl.mono())
		return
	}
}

func (r *reader) consume(c *subConn, data []byte, now int64) {
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		data = c.partial
	}
	used, err := parseFrames(data, func(op ws.OpCode, p []byte) bool { return r.frame(c, op, p, now) })
	if err != nil {
		r.t.BadFrames++
		r.t.note("%v", err)
		r.drop(c)
		return
	}
	if c.closed {
		return
	}
	if rest := data[used:]; len(rest) > 0 {
		c.partial = append(c.partial[:0], rest...) // copy handles the overlap
	} else {
		c.partial = nil
	}
}

// frame handles one server frame; false stops parsing (connection gone).
func (r *reader) frame(c *subConn, op ws.OpCode, p []byte, now int64) bool {
	switch op {
	case ws.OpText:
		switch eventKindOf(p) {
		case kindSnapshot:
			r.snapshot(c, p, now)
		case kindHeartbeat:
			r.t.Heartbeats++
		case kindError:
			r.t.ErrorEvents++
			r.t.note("Error event: %s", p)
		default:
			r.t.OtherFrames++
		}
	case ws.OpPing:
		r.t.Pings++
		_, _ = unix.Write(c.fd, clientFrame(ws.OpPong, p, [4]byte{7, 3, 1, 5}))
	case ws.OpClose:
		r.t.ClosedByServer++
		code, reason := ws.ParseCloseFrameData(p)
		r.t.note("closed by the server: %d %s", code, reason)
		r.drop(c)
		return false
	default:
		r.t.OtherFrames++
	}
	return true
}

// snapshot assigns a Snapshot received at now to its tick: the latest
// t0 + k·interval at or before now + earlyTolerance.
func (r *reader) snapshot(c *subConn, p []byte, now int64) {
	w0 := r.cl.w0.Load()
	if now < w0 {
		c.calibrate(now)
	}
	k := (now - c.t0 + int64(earlyTolerance)) / c.interval
	tick := c.t0 + k*c.interval
	if k <= c.lastK {
		if tick >= w0 {
			r.t.Duplicates++
		}
		return
	}
	c.lastK = k
	if tick < w0 {
		return
	}
	s := sample{tick: tick, lag: now - tick, conn: c.idx}
	if ts, ok := r.timestamp(p); ok {
		s.age, s.hasAge = int64(r.cl.wall(now).Sub(ts)), true
	} else {
		r.t.BadTimestamps++
	}
	r.samples = append(r.samples, s)
}

// calibrate moves t0 earlier when a Snapshot before the window arrives
// earlier than t0 predicts. A server keeps a subscriber's phase from the
// tick its first Snapshot was scheduled for, not from when that was
// written; when the first was written late (a burst of handshakes, a
// collection), every later tick would otherwise look early, beyond
// earlyTolerance, and be counted an interval late. t0 becomes the earliest
// phase seen, so lags in the window are measured against the subscriber's
// best tick, never flattering the server. Shifts stay under half an
// interval, so tick indices do not change.
func (c *subConn) calibrate(now int64) {
	k := (now - c.t0 + c.interval/2) / c.interval
	if k < 1 {
		return
	}
	if off := now - (c.t0 + k*c.interval); off < 0 {
		c.t0 += off
	}
}

func (r *reader) timestamp(p []byte) (time.Time, bool) {
	raw, ok := eventTimestamp(p)
	if !ok {
		return time.Time{}, false
	}
	if r.tsRaw != nil && bytes.Equal(raw, r.tsRaw) {
		return r.tsVal, true
	}
	t, err := time.Parse(time.RFC3339Nano, string(raw))
	if err != nil {
		return time.Time{}, false
	}
	r.tsRaw, r.tsVal = append(r.tsRaw[:0], raw...), t
	return t, true
}

// answer accounts for the ticks in [w0, end].
func (r *reader) answer(end int64) readerAnswer {
	w0 := r.cl.w0.Load()
	a := readerAnswer{tally: r.t}
	made := make([]int64, len(r.conns))
	worst := -1
	for i, s := range r.samples {
		if s.tick > end {
			continue
		}
		a.samples = append(a.samples, s)
		made[s.conn]++
		if worst < 0 || s.lag > r.samples[worst].lag {
			worst = i
		}
	}
	if worst >= 0 {
		s := r.samples[worst]
		c := r.conns[s.conn]
		a.worstLag = s.lag
		a.worst = fmt.Sprintf("subscriber %d (interval %s): tick %d delivered %.1f ms late",
			c.id, time.Duration(c.interval), (s.tick-c.t0)/c.interval, float64(s.lag)/1e6)
	}
	for i, c := range r.conns {
		due := dueTicks(c.t0, c.interval, w0, end)
		a.due += uint64(due)
		if made[i] < due && a.short == "" {
			a.short = fmt.Sprintf("subscriber %d (interval %s): %d of %d ticks delivered", c.id, time.Duration(c.interval), made[i], due)
		}
	}
	return a
}

func (r *reader) drop(c *subConn) {
	if c.closed {
		return
	}
	c.closed = true
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	c.partial = nil
}

// close releases the sockets and the epoll descriptor (after run returned).
func (r *reader) close() {
	for _, c := range r.conns {
		if !c.closed {
			c.closed = true
			unix.Close(c.fd)
		}
	}
	// Sockets handed over but never taken.
	for {
		select {
		case c := <-r.inbox:
			unix.Close(c.fd)
		default:
			unix.Close(r.epfd)
			return
		}
	}
}
