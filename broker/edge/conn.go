package edge

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // our close frame is queued or sent: no more data frames
	stateClosed            // socket closed, unregistered
)

// closeMode says what happens once our close frame has been written.
type closeMode uint8

const (
	// closeEcho: we echoed the client's close; close the socket.
	closeEcho closeMode = iota
	// closeWait: wait for the client's close frame (graceful shutdown).
	closeWait
	// closeLinger: half-close, then read and discard until the client
	// closes or lingerTimeout passes, so that unread input does not turn
	// our close into a reset that destroys the close frame in flight.
	closeLinger
	// closeNow: one attempt to write the frame, then close.
	closeNow
)

// lingerTimeout bounds closeLinger.
const lingerTimeout = 2 * time.Second

// Close reasons (connections_closed_total label values).
const (
	reasonClientClose   = "client_close"
	reasonPeerGone      = "peer_gone"
	reasonIOError       = "io_error"
	reasonProtocolError = "protocol_error"
	reasonOversized     = "oversized"
	reasonIdleTimeout   = "idle_timeout"
	reasonWriteTimeout  = "write_timeout"
	reasonSlowConsumer  = "slow_consumer"
	reasonShutdown      = "shutdown"
	reasonTokenExpired  = "token_expired"
)

var closeReasons = []string{
	reasonClientClose, reasonPeerGone, reasonIOError, reasonProtocolError, reasonOversized,
	reasonIdleTimeout, reasonWriteTimeout, reasonSlowConsumer, reasonShutdown, reasonTokenExpired,
}

// frameKind says how queued output is treated.
type frameKind uint8

const (
	// frameData counts against MaxPendingBytes.
	frameData frameKind = iota
	// frameSnap is a live Snapshot: replaceable by a newer one while unsent
	// (conflation), dropped when closing, not counted in pending bytes.
	frameSnap
	// frameHist is a history response (TimeSeries, replayed snapshots):
	// counted against MaxHistoryPendingBytes instead, dropped when closing
	// unless half written, and a barrier to conflation: a live Snapshot
	// queued before a replay is never replaced by one newer than it.
	frameHist
)

// outFrame is a queued frame (or, for a replay, consecutive frames):
// shared, immutable bytes.
type outFrame struct {
	b    []byte
	kind frameKind
	msgs uint32 // frames in b when more than one
}

// count is the number of WebSocket frames in f.
func (f *outFrame) count() int { return max(int(f.msgs), 1) }

// conn is one upgraded WebSocket connection. Fields are grouped by owner.
// The layout is kept small because an idle connection costs exactly this
// struct (208 B, a malloc size class: see conn_size_test.go) plus its
// registry slot: the input and output states are pointers that are nil
// while there is nothing half-received or queued, the subscription is
// shared while it is the default, and the socket is a bare descriptor
// rather than a net.Conn (see takeFD), which would add about 950 B of
// netFD, addresses and runtime poll descriptor per connection.
type conn struct {
	e     *Edge
	shard *shard
	id    uint64 // registry id; epoll event data
	// fd is the socket, owned by the connection and closed by closeLocked.
	// Every read, write, shutdown and epoll_ctl on it happens with mu held
	// and the state checked (see writeLocked): that is what keeps a
	// descriptor number reused after close from being touched.
	fd       int32
	interval atomic.Int32 // sub.IntervalSeconds, for scrapes without c.mu

	// Admission, set before the connection is registered, then read-only:
	// the address's limits entry (released on close), what the token
	// grants (nil: everything) and when it expires (mono ns; 0: never).
	lim     *addrEntry
	rate    *addrEntry
	grant   *auth.Grant
	expires int64

	lastRead atomic.Int64 // mono ns of the last bytes received
	opened   int64        // mono ns

	// Input: owned by the poller goroutine (by the handshake goroutine
	// before the connection is registered with epoll). Nil between frames.
	in *inputState

	// Scheduling: owned by the shard goroutine (set up by the handshake
	// goroutine before the shard learns of the connection).
	next, prev *conn
	due        int64 // wheel tick
	lastSnap   int64 // mono ns: the last snapshot tick (phase reference)
	nextSnap   int64
	nextBeat   int64
	nextPing   int64
	waitIdx    int32 // index in shard.waiting while waiting
	linked     bool
	added      bool // the shard has seen opAdd
	waiting    bool // no snapshot existed yet: waiting for the first
	phased     bool // nextSnap is set (the first snapshot is scheduled)
	sentSnap   bool // a snapshot was sent: lastSnap is the phase reference
	// registered is guarded by the registry's lock.
	registered bool

	// Output and lifecycle: guarded by mu, which also makes the holder the
	// only writer on the socket. The one-byte fields come first so that
	// they fill the padding after the flags above (conn_size_test.go).
	state      connState
	mode       closeMode
	armed      bool // EPOLLOUT requested
	inPoll     bool // fd is registered with epoll
	halfClosed bool
	mu         sync.Mutex
	sub        *proto.Subscription // immutable; defaultSub until the client subscribes
	scope      *scopeState         // sub.Scope's state, pinned by the connection
	staleMark  int64               // see stale.go
	work       *connWork           // nil until the first history request or queued message
	q          *outQueue           // nil unless output is queued or the connection is closing
}

// outQueue is what a connection could not write at once, and its closing
// state.
type outQueue struct {
	frames        []outFrame
	off           int   // bytes of frames[0] already written
	bytes         int   // frameData bytes queued
	histBytes     int   // frameHist bytes queued
	lastProgress  int64 // mono ns of the last write progress while queued
	closeDeadline int64 // mono ns; a closing connection is closed then
	reason        string
}

// defaultSub is the subscription every connection starts with, shared.
var defaultSub = func() *proto.Subscription {
	s := proto.DefaultSubscription()
	return &s
}()

// internSub returns a pointer to sub, shared when it is the default: most
// clients never change it, and a copy costs each of them 96 B.
func internSub(sub proto.Subscription) *proto.Subscription {
	if sub == *defaultSub {
		return defaultSub
	}
	return &sub
}

// setSubLocked makes sub the connection's subscription (with c.mu held).
func (c *conn) setSubLocked(sub proto.Subscription) {
	c.sub = internSub(sub)
	c.interval.Store(int32(sub.IntervalSeconds))
}

// newConn returns a connection on socket fd, which it owns from now on,
// subscribed to the default subscription (the cluster scope, pinned).
func newConn(e *Edge, fd int) *conn {
	now := e.mono()
	c := &conn{e: e, fd: int32(fd), opened: now, sub: defaultSub, scope: e.scopes.cluster}
	c.scope.retain()
	c.lastRead.Store(now)
	c.interval.Store(proto.DefaultIntervalSeconds)
	return c
}

// queue returns c.q, allocating it (with c.mu held).
func (c *conn) queue() *outQueue {
	if c.q == nil {
		c.q = &outQueue{}
	}
	return c.q
}

// queued is the number of frames waiting (with c.mu held).
func (c *conn) queued() int {
	if c.q == nil {
		return 0
	}
	return len(c.q.frames)
}

// closeReason is the reason given when closing started, if any.
func (c *conn) closeReason() string {
	if c.q == nil {
		return ""
	}
	return c.q.reason
}

// writeLocked writes what the socket takes of b, with c.mu held; a full
// socket is (n < len(b), nil), not an error.
//
// It is safe to use the bare descriptor because every write happens with
// c.mu held and after checking that the connection is not closed, and
// closeLocked, the only place that closes the socket (and so frees the
// descriptor's number for reuse), also runs with c.mu held.
func (c *conn) writeLocked(b []byte) (int, error) {
	if c.state == stateClosed {
		return 0, net.ErrClosed
	}
	for {
		n, err := unix.Write(int(c.fd), b)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		default:
			return 0, err
		}
	}
}

// read reads what the socket holds into buf without blocking: (0, nil) is
// the end of input, unix.EAGAIN nothing to read, net.ErrClosed a connection
// closed meanwhile. Holding c.mu keeps closeLocked from releasing the
// descriptor's number during the read (see writeLocked); reads are rare
// (subscriptions, pongs), so the lock costs deliveries nothing.
func (c *conn) read(buf []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return 0, net.ErrClosed
	}
	for {
		n, err := unix.Read(int(c.fd), buf)
		if err != unix.EINTR {
			return max(n, 0), err
		}
	}
}

// send queues b behind pending output, or writes it at once; frames after
// the connection started closing are dropped.
func (c *conn) send(b []byte, snap bool) {
	c.mu.Lock()
	if c.state == stateOpen {
		c.enqueueLocked(b, snap)
	}
	c.mu.Unlock()
}

// enqueueLocked is enqueueFrameLocked for one Snapshot or data frame.
func (c *conn) enqueueLocked(b []byte, snap bool) bool {
	kind := frameData
	if snap {
		kind = frameSnap
	}
	return c.enqueueFrameLocked(outFrame{b: b, kind: kind})
}

// add counts f's bytes in the pending totals (sign -1 removes them).
func (q *outQueue) add(f *outFrame, sign int) {
	switch f.kind {
	case frameData:
		q.bytes += sign * len(f.b)
	case frameHist:
		q.histBytes += sign * len(f.b)
	}
}

// enqueueFrameLocked writes f directly when nothing is queued (the common
// case: one syscall, nothing retained) and queues the remainder otherwise.
// A queued, not yet started Snapshot is replaced by a newer one, unless a
// history frame lies between them. It reports whether f was written whole
// at once.
func (c *conn) enqueueFrameLocked(f outFrame) bool {
	m := c.e.m
	if c.state == stateClosed {
		return false
	}
	if c.queued() == 0 {
		n, err := c.writeLocked(f.b)
		if err != nil {
			c.closeLocked(reasonIOError)
			return false
		}
		m.bytesSent.Add(float64(n))
		if n == len(f.b) {
			m.msgsSent.Add(float64(f.count()))
			return true
		}
		q := c.queue()
		q.frames = append(q.frames, f)
		q.off = n
		q.add(&f, 1)
		q.lastProgress = c.e.mono()
		c.armLocked()
		return false
	}
	q := c.q
	if f.kind == frameSnap {
		for i := len(q.frames) - 1; i >= 0 && q.frames[i].kind != frameHist; i-- {
			if q.frames[i].kind == frameSnap && (i > 0 || q.off == 0) {
				q.frames[i].b = f.b
				m.conflated.Inc()
				return false
			}
		}
	}
	q.frames = append(q.frames, f)
	q.add(&f, 1)
	cfg := &c.e.cfg
	if (q.bytes > cfg.MaxPendingBytes || q.histBytes > cfg.MaxHistoryPendingBytes) && c.state == stateOpen {
		m.slowConsumers.Inc()
		c.e.log.Debug("slow consumer", "pending_bytes", q.bytes, "pending_history_bytes", q.histBytes)
		c.startCloseLocked(frameCloseSlow, reasonSlowConsumer, closeNow)
	}
	return false
}

// flushLocked writes queued output until the socket is full or the queue
// is empty.
func (c *conn) flushLocked() {
	m := c.e.m
	q := c.q
	for q != nil && len(q.frames) > 0 {
		f := q.frames[0]
		n, err := c.writeLocked(f.b[q.off:])
		if err != nil {
			c.closeLocked(reasonIOError)
			return
		}
		if n > 0 {
			m.bytesSent.Add(float64(n))
			q.lastProgress = c.e.mono()
		}
		q.off += n
		if q.off < len(f.b) {
			return // still full; EPOLLOUT stays armed
		}
		m.msgsSent.Add(float64(f.count()))
		q.add(&f, -1)
		copy(q.frames, q.frames[1:])
		q.frames[len(q.frames)-1] = outFrame{}
		q.frames = q.frames[:len(q.frames)-1]
		q.off = 0
	}
	c.disarmLocked()
	if c.state == stateOpen {
		c.q = nil // an idle connection keeps no queue
		return
	}
	c.drainedLocked()
}

// drainedLocked runs when the queue empties while closing.
func (c *conn) drainedLocked() {
	if c.state != stateClosing {
		return
	}
	switch c.mode {
	case closeEcho, closeNow:
		c.closeLocked(c.closeReason())
	case closeLinger:
		if !c.halfClosed {
			c.halfClosed = true
			_ = unix.Shutdown(int(c.fd), unix.SHUT_WR)
		}
	}
}

// armLocked asks epoll for EPOLLOUT and tells the shard, which enforces
// WriteTimeout on queued output.
func (c *conn) armLocked() {
	if c.armed {
		return
	}
	c.armed = true
	if c.inPoll {
		c.e.poller.setWritable(c, true)
	}
	c.shard.kick(c, opResched)
}

func (c *conn) disarmLocked() {
	if !c.armed {
		return
	}
	c.armed = false
	if c.inPoll {
		c.e.poller.setWritable(c, false)
	}
}

// startClose begins closing with frame (a close frame); see closeMode.
func (c *conn) startClose(frame []byte, reason string, mode closeMode) {
	c.mu.Lock()
	c.startCloseLocked(frame, reason, mode)
	c.mu.Unlock()
}

func (c *conn) startCloseLocked(frame []byte, reason string, mode closeMode) {
	if c.state != stateOpen {
		return
	}
	q := c.queue()
	c.state, c.mode, q.reason = stateClosing, mode, reason
	if mode == closeNow {
		// Whatever is queued will not be delivered; the close frame goes
		// out only if no frame is half written (it would corrupt it).
		if q.off == 0 {
			q.frames, q.bytes, q.histBytes = nil, 0, 0
			c.disarmLocked()
			_, _ = c.writeLocked(frame)
		}
		c.closeLocked(reason)
		return
	}
	// Unsent snapshots and history are worthless now.
	kept := q.frames[:0]
	for i, f := range q.frames {
		if f.kind == frameData || (i == 0 && q.off > 0) {
			kept = append(kept, f)
		} else {
			q.add(&f, -1)
		}
	}
	clear(q.frames[len(kept):])
	q.frames = kept
	if mode == closeLinger {
		q.closeDeadline = c.e.mono() + int64(lingerTimeout)
		c.shard.kick(c, opResched)
	}
	c.enqueueLocked(frame, false)
	if c.state == stateClosing && c.queued() == 0 {
		c.drainedLocked()
	}
}

// close closes the connection at once.
func (c *conn) close(reason string) {
	c.mu.Lock()
	c.closeLocked(reason)
	c.mu.Unlock()
}

// closeLocked closes the socket and unregisters the connection. The reason
// given when closing started wins over the one that finished it.
func (c *conn) closeLocked(reason string) {
	if c.state == stateClosed {
		return
	}
	if r := c.closeReason(); c.state == stateClosing && r != "" {
		reason = r
	}
	c.state = stateClosed
	if c.inPoll {
		// Before Close: once the fd number is released it may be reused.
		c.e.poller.remove(c)
		c.inPoll = false
	}
	_ = unix.Close(int(c.fd))
	c.q, c.armed = nil, false
	c.scope.release()
	c.releaseJobsLocked()
	c.e.reg.remove(c)
	c.e.limits.close(c.lim)
	c.lim = nil
	c.e.m.closed(reason, time.Duration(c.e.mono()-c.opened))
	if c.shard != nil {
		c.shard.kick(c, opClosed)
	}
}

// grantOf is what the connection's token grants.
func (c *conn) grantOf() auth.Grant {
	if c.grant == nil {
		return auth.Anonymous
	}
	return *c.grant
}

// isOpen reports whether the connection still takes data frames.
func (c *conn) isOpen() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateOpen
}

// onWritable flushes queued output after EPOLLOUT.
func (c *conn) onWritable() {
	c.mu.Lock()
	switch {
	case c.state == stateClosed:
	case c.queued() > 0:
		c.flushLocked()
	default:
		c.disarmLocked()
	}
	c.mu.Unlock()
}
