//go:build linux

package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/proto"
)

// rawServer is the machine's ceiling: the same sockets as the edge's (a
// zero-copy gobwas upgrade, then the first Snapshot and the client's
// subscription read in the handshake goroutine), after which one goroutine
// writes the current pre-encoded Snapshot frame — the bytes the edge sends
// — to each descriptor on the edge's schedule: t0 + k·interval rounded to
// 10 ms slots. No locks, no metrics, no per-connection state beyond the
// descriptor and its next tick: a write(2) per delivery and nothing else.
type rawServer struct {
	ln   net.Listener
	nc   *nats.Conn
	log  *slog.Logger
	base time.Time // origin of the monotonic schedule

	frame atomic.Pointer[[]byte] // the newest snapshot's frame, all metrics

	hsSem chan struct{}
	hsWG  sync.WaitGroup

	inboxMu sync.Mutex
	inbox   []rawConn
	wake    chan struct{}

	// Owned by the writer goroutine. Each slot is an intrusive list of
	// connection indices (head, then rawConn.link): no allocation per
	// delivery, as in the edge's wheel.
	conns []rawConn
	slots [rawWheelSize]int32
	cur   int64

	connections atomic.Int64
	writes      atomic.Uint64
	failed      atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	started  atomic.Bool
}

type rawConn struct {
	nc       net.Conn // held so that the socket stays open
	fd       int
	interval int64 // ns
	next     int64 // mono ns of the next write
	link     int32 // the next connection in the same slot, -1 at the end
	dead     bool
}

// The edge's schedule: 10 ms slots, a wheel longer than the longest
// interval, ticks rounded to the nearest slot.
const (
	rawSlotNanos = int64(10 * time.Millisecond)
	rawWheelSize = 1 << 13
	rawWheelMask = rawWheelSize - 1
	rawLookahead = 100
	// rawHandshakes bounds concurrent handshakes, like the edge's.
	rawHandshakes      = 1024
	rawHandshakeTimout = 5 * time.Second
	// maxSubscriptionBytes bounds the subscription message read.
	maxSubscriptionBytes = 4096
)

func rawTickOf(t int64) int64 { return (t + rawSlotNanos/2) / rawSlotNanos }

func newRawServer(ln net.Listener, nc *nats.Conn, log *slog.Logger) (*rawServer, error) {
	r := &rawServer{
		ln: ln, nc: nc, log: log, base: time.Now(),
		hsSem: make(chan struct{}, rawHandshakes),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range r.slots {
		r.slots[i] = -1
	}
	return r, nil
}

func (r *rawServer) mono() int64  { return int64(time.Since(r.base)) }
func (r *rawServer) addr() string { return r.ln.Addr().String() }
func (r *rawServer) ready() bool  { return r.frame.Load() != nil }

func (r *rawServer) counters() (counters, error) {
	return counters{
		Connections: r.connections.Load(),
		Deliveries:  r.writes.Load(),
		Dropped:     r.failed.Load(),
	}, nil
}

// snapshotFrame is the unmasked text frame of s's Snapshot event with every
// metric: byte for byte what the edge writes.
func snapshotFrame(s *proto.Snapshot) []byte {
	payload := proto.AppendSnapshotEvent(nil, s, proto.GuideMetrics)
	var h [ws.MaxHeaderSize]byte
	hw := &byteWriter{b: h[:0]}
	_ = ws.WriteHeader(hw, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(payload))})
	return append(hw.b, payload...)
}

func (r *rawServer) run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("raw server already running")
	}
	defer close(r.done)
	subject := proto.SnapshotSubject(proto.ClusterScope())
	sub, err := r.nc.Subscribe(subject, func(m *nats.Msg) {
		s, err := proto.DecodeSnapshot(m.Data)
		if err != nil {
			return
		}
		f := snapshotFrame(&s) // encoded once per snapshot
		r.frame.Store(&f)
	})
	if err != nil {
		_ = r.ln.Close()
		return fmt.Errorf("start raw server: subscribe to %s: %w", subject, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.acceptLoop()
	}()
	writerStop := make(chan struct{})
	go func() {
		defer wg.Done()
		r.writeLoop(writerStop)
	}()
	select {
	case <-ctx.Done():
	case <-r.stop:
	}
	_ = r.ln.Close()
	r.hsWG.Wait()
	close(writerStop)
	wg.Wait()
	for _, c := range r.conns {
		if c.nc != nil { // nil once dead
			_ = c.nc.Close()
		}
	}
	r.inboxMu.Lock()
	for _, c := range r.inbox {
		_ = c.nc.Close()
	}
	r.inbox = nil
	r.inboxMu.Unlock()
	_ = sub.Unsubscribe()
	return nil
}

func (r *rawServer) shutdown(ctx context.Context) error {
	r.stopOnce.Do(func() { close(r.stop) })
	if !r.started.Load() {
		_ = r.ln.Close()
		return nil
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down raw server: %w", ctx.Err())
	}
}

func (r *rawServer) acceptLoop() {
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("accept", "err", err)
			continue
		}
		r.hsSem <- struct{}{}
		r.hsWG.Add(1)
		go func() {
			defer func() {
				<-r.hsSem
				r.hsWG.Done()
			}()
			if err := r.handshake(nc); err != nil {
				r.log.Debug("raw handshake", "err", err)
				_ = nc.Close()
			}
		}()
	}
}

// handshake upgrades nc, writes the first Snapshot (the connection's t0),
// reads the client's subscription for its interval and hands the socket to
// the writer.
func (r *rawServer) handshake(nc net.Conn) error {
	_ = nc.SetDeadline(time.Now().Add(rawHandshakeTimout))
	if _, err := ws.Upgrade(nc); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	f := r.frame.Load()
	if f == nil {
		return errors.New("no snapshot yet")
	}
	if _, err := nc.Write(*f); err != nil {
		return fmt.Errorf("write first snapshot: %w", err)
	}
	t0 := r.mono()
	h, err := ws.ReadHeader(nc)
	if err != nil {
		return fmt.Errorf("read subscription: %w", err)
	}
	if h.OpCode != ws.OpText || !h.Fin || h.Length > maxSubscriptionBytes {
		return fmt.Errorf("read subscription: unexpected %v frame of %d bytes", h.OpCode, h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(nc, p); err != nil {
		return fmt.Errorf("read subscription: %w", err)
	}
	ws.Cipher(p, h.Mask, 0)
	sub, err := proto.ParseSubscription(p)
	if err != nil {
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return errors.New("accepted connection has no descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw connection: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return fmt.Errorf("raw connection: %w", err)
	}
	interval := int64(sub.IntervalSeconds) * int64(time.Second)
	r.inboxMu.Lock()
	r.inbox = append(r.inbox, rawConn{nc: nc, fd: fd, interval: interval, next: t0 + interval})
	r.inboxMu.Unlock()
	r.connections.Add(1)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// writeLoop drives the wheel until stop, sleeping until the next occupied
// slot like an edge shard.
func (r *rawServer) writeLoop(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	r.cur = r.mono() / rawSlotNanos
	for {
		r.takeInbox()
		r.advance()
		var timerC <-chan time.Time
		if next, ok := r.nextOccupied(); ok {
			d := time.Duration(next*rawSlotNanos - r.mono())
			if d <= 0 {
				continue
			}
			timer.Reset(d)
			timerC = timer.C
		}
		select {
		case <-stop:
			return
		case <-r.wake:
		case <-timerC:
		}
	}
}

func (r *rawServer) takeInbox() {
	r.inboxMu.Lock()
	in := r.inbox
	r.inbox = nil
	r.inboxMu.Unlock()
	for _, c := range in {
		r.conns = append(r.conns, c)
		r.link(int32(len(r.conns) - 1))
	}
}

// link pushes connection i onto the slot of its next tick.
func (r *rawServer) link(i int32) {
	k := max(rawTickOf(r.conns[i].next), r.cur) & rawWheelMask
	r.conns[i].link = r.slots[k]
	r.slots[k] = i
}

func (r *rawServer) nextOccupied() (int64, bool) {
	if len(r.conns) == 0 {
		return 0, false
	}
	for k := r.cur; k < r.cur+rawLookahead; k++ {
		if r.slots[k&rawWheelMask] >= 0 {
			return k, true
		}
	}
	return r.cur + rawLookahead, true
}

func (r *rawServer) advance() {
	now := r.mono()
	for nowTick := now / rawSlotNanos; r.cur <= nowTick; r.cur++ {
		r.processSlot(r.cur, now)
	}
}

// processSlot writes to every connection due at tick k and moves it on by
// its interval (to a different slot: intervals are 1 to 60 s, the wheel
// 82 s, so the list being walked is never pushed onto).
func (r *rawServer) processSlot(k, now int64) {
	i := k & rawWheelMask
	idx := r.slots[i]
	if idx < 0 {
		return
	}
	r.slots[i] = -1
	f := *r.frame.Load()
	for idx >= 0 {
		c := &r.conns[idx]
		next := c.link
		switch {
		case c.dead:
		case rawTickOf(c.next) > k: // a later turn of the wheel
			c.link, r.slots[i] = r.slots[i], idx
		default:
			r.write(c, f)
			for c.next += c.interval; c.next <= now; c.next += c.interval {
			}
			if !c.dead {
				r.link(idx)
			}
		}
		idx = next
	}
}

// write is the whole per-delivery work of the ceiling.
func (r *rawServer) write(c *rawConn, b []byte) {
	for {
		n, err := unix.Write(c.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != len(b) {
			// A short write would corrupt the stream: give up on it. Its
			// slot in conns stays (the wheel links by index), its socket
			// goes, like a subscriber that left (the warm-up's).
			c.dead = true
			_ = c.nc.Close()
			c.nc = nil
			r.connections.Add(-1)
			r.failed.Add(1)
			return
		}
		r.writes.Add(1)
		return
	}
}
