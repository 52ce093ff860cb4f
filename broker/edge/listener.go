package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// One listener, one port. The accept loop only accepts: each connection's
// request head is read by a handshake goroutine (at most maxHandshakes at a
// time, each bounded by HandshakeTimeout), so a slow or bogus client never
// holds up accept. "GET /ws/metrics" is upgraded in place by gobwas/ws from
// the bytes already read; anything else goes, those bytes replayed, to the
// internal http.Server through a channel-fed listener.

const (
	// maxHandshakes bounds concurrent handshakes; when all are taken for
	// longer than handshakeQueueWait, new connections are closed unread
	// (counted in handshakes_rejected_total).
	maxHandshakes      = 1024
	handshakeQueueWait = 100 * time.Millisecond
	// maxRequestHead bounds a WebSocket upgrade request head.
	maxRequestHead = 8 << 10
	wsPath         = "/ws/metrics"
)

var headPool = sync.Pool{New: func() any {
	b := make([]byte, 0, maxRequestHead)
	return &b
}}

var (
	respHeadTooLarge = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	respBadRequest   = []byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	respUnavailable  = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
)

// acceptLoop accepts until the listener is closed.
func (e *Edge) acceptLoop() {
	var backoff time.Duration
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			if e.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			e.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-e.lnClosed:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		if !e.acquireHandshake() {
			e.m.handshakesRejected.Inc()
			_ = nc.Close()
			continue
		}
		e.hsWG.Add(1)
		go e.handshake(nc)
	}
}

// acquireHandshake takes a handshake slot, waiting at most
// handshakeQueueWait: a burst of real clients frees slots within
// milliseconds, while stalled handshakes cannot hold accept for longer.
func (e *Edge) acquireHandshake() bool {
	select {
	case e.hsSem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(handshakeQueueWait)
	defer t.Stop()
	select {
	case e.hsSem <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-e.lnClosed:
		return false
	}
}

// handshake routes one new connection.
func (e *Edge) handshake(nc net.Conn) {
	defer func() {
		<-e.hsSem
		e.hsWG.Done()
	}()
	if !e.trackHandshake(nc) {
		_ = nc.Close()
		return
	}
	handedOff := false
	defer func() {
		if !handedOff && e.untrackHandshake(nc) {
			_ = nc.Close()
		}
	}()
	_ = nc.SetDeadline(time.Now().Add(e.cfg.HandshakeTimeout))
	bp := headPool.Get().(*[]byte)
	defer headPool.Put(bp)
	buf := (*bp)[:0]

	buf, lineEnd, err := readUntil(nc, buf, lineTerminator)
	if err != nil {
		if errors.Is(err, errHeadTooLarge) {
			_, _ = nc.Write(respBadRequest)
		}
		return
	}
	toHTTP := func() {
		_ = nc.SetDeadline(time.Time{})
		handedOff = true
		if !e.untrackHandshake(nc) {
			return // closed by shutdown
		}
		if !e.httpLn.deliver(&prefixConn{Conn: nc, prefix: bytes.Clone(buf)}) {
			_ = nc.Close()
		}
	}
	if !isWebSocketRequest(buf[:lineEnd]) {
		toHTTP()
		return
	}
	buf, headEnd, err := readUntil(nc, buf, headTerminator)
	if err != nil {
		if errors.Is(err, errHeadTooLarge) {
			_, _ = nc.Write(respHeadTooLarge)
		}
		return
	}
	if !hasUpgradeHeader(buf[:headEnd]) {
		// A plain GET of the endpoint: let the HTTP server answer it (400)
		// and keep the connection's keep-alive semantics.
		toHTTP()
		return
	}
	if _, ok := nc.(syscall.Conn); !ok {
		// Only a socket can join epoll (a Config.Listener wrapping conns).
		e.log.Error("accepted connection has no file descriptor; cannot serve WebSocket", "type", fmt.Sprintf("%T", nc))
		_, _ = nc.Write(respUnavailable)
		return
	}
	init, rej := e.upgradeTarget(e.hsCtx, requestQuery(buf[:lineEnd]))
	if rej != nil {
		e.m.errorsByType[rej.kind].Inc()
		_, _ = nc.Write(rej.response())
		return
	}
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(buf[:headEnd]), nc}
	if _, err := e.upgrader.Upgrade(rw); err != nil {
		// The upgrader has answered with an HTTP error.
		init.st.release()
		e.m.errorsByType[errTypeHandshake].Inc()
		e.log.Debug("websocket handshake rejected", "err", err, "remote", nc.RemoteAddr().String())
		return
	}
	_ = nc.SetDeadline(time.Time{})
	leftover := bytes.Clone(buf[headEnd:]) // frames the client sent right behind its request
	if !e.untrackHandshake(nc) {
		init.st.release()
		handedOff = true
		return
	}
	handedOff = true
	if !e.attach(nc, leftover, init) {
		_ = nc.Close()
	}
}

var errHeadTooLarge = errors.New("request head too large")

// lineTerminator and headTerminator find the end of the request line and
// of the request head (bare LF tolerated, as gobwas/ws does).
func lineTerminator(b []byte) int { return bytes.IndexByte(b, '\n') }

func headTerminator(b []byte) int {
	for i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b); {
		rest := b[i+1:]
		switch {
		case len(rest) > 0 && rest[0] == '\n':
			return i + 2
		case len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n':
			return i + 3
		}
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return -1
}

// readUntil reads into buf (up to its capacity) until find reports an end.
func readUntil(r io.Reader, buf []byte, find func([]byte) int) ([]byte, int, error) {
	for {
		if end := find(buf); end >= 0 {
			return buf, end, nil
		}
		if len(buf) == cap(buf) {
			return buf, 0, errHeadTooLarge
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			return buf, 0, err
		}
	}
}

// isWebSocketRequest reports whether the request line asks for /ws/metrics
// (any query string) with GET.
func isWebSocketRequest(line []byte) bool {
	const prefix = "GET " + wsPath
	if !bytes.HasPrefix(line, []byte(prefix)) || len(line) == len(prefix) {
		return false
	}
	c := line[len(prefix)]
	return c == ' ' || c == '?'
}

// hasUpgradeHeader reports whether the request head has an Upgrade header.
func hasUpgradeHeader(head []byte) bool {
	for line := range bytes.Lines(head) {
		if len(line) > 8 && bytes.EqualFold(line[:8], []byte("upgrade:")) {
			return true
		}
	}
	return false
}

// attach turns an upgraded socket into a registered connection: it sends
// the first snapshot of its scope (when one exists) or, with since, queues
// the replay instead, processes whatever input came with the handshake, and
// hands the connection to epoll and its shard. It takes over init.st's pin
// and reports whether it took ownership of nc.
func (e *Edge) attach(nc net.Conn, leftover []byte, init connInit) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		init.st.release()
		e.log.Error("upgraded connection has no file descriptor", "type", fmt.Sprintf("%T", nc))
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		init.st.release()
		e.log.Error("get raw connection", "err", err)
		return false
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		init.st.release()
		return false
	}
	c := newConn(e, nc, rc, fd)
	c.shard = e.pickShard()
	e.m.opened.Inc()

	c.mu.Lock()
	c.scope.release()
	c.scope, c.sub = init.st, init.sub
	replay := false
	if !init.sub.Since.IsZero() {
		// The replay takes the first snapshot's place.
		if ok, wait := c.takeTokenLocked(); ok {
			init.st.retain()
			c.queueLocked(subJob{sub: init.sub, st: init.st, replay: true})
			replay = true
		} else {
			e.m.historyRateLimited.Inc()
			c.enqueueLocked(errorFrame(e.rateLimitMessage(wait)), false)
		}
	}
	if sf := c.scope.latest.Load(); sf != nil && !replay {
		c.lastSnap, c.sentSnap = c.opened, true
		if c.enqueueLocked(sf.frame(c.sub.SnapshotMetrics()), true) {
			e.m.deliveryLag.Observe(max(e.cfg.Now().Sub(sf.snap.Time), 0).Seconds())
		}
	}
	c.mu.Unlock()
	if len(leftover) > 0 {
		var ps parseScratch
		c.input(&ps, leftover)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		if c.state == stateClosing {
			// Closing with nothing to read its reply: finish now.
			c.closeLocked(c.closeReason())
		}
		return true
	}
	if !e.reg.add(c) {
		c.startCloseLocked(frameCloseShutdown, reasonShutdown, closeNow)
		return true
	}
	if err := e.poller.add(c); err != nil {
		e.log.Error("register connection with epoll", "err", err)
		c.closeLocked(reasonIOError)
		return true
	}
	c.inPoll = true
	c.shard.kick(c, opAdd)
	return true
}

func (e *Edge) trackHandshake(nc net.Conn) bool {
	e.hsMu.Lock()
	defer e.hsMu.Unlock()
	if e.draining.Load() {
		return false
	}
	e.hsConns[nc] = struct{}{}
	return true
}

// untrackHandshake reports whether nc was still tracked, i.e. not closed
// by shutdown; afterwards shutdown no longer touches it.
func (e *Edge) untrackHandshake(nc net.Conn) bool {
	e.hsMu.Lock()
	defer e.hsMu.Unlock()
	_, ok := e.hsConns[nc]
	delete(e.hsConns, nc)
	return ok
}

// closeHandshakes closes every connection still in its handshake.
func (e *Edge) closeHandshakes() {
	e.hsMu.Lock()
	defer e.hsMu.Unlock()
	for nc := range e.hsConns {
		_ = nc.Close()
		delete(e.hsConns, nc)
	}
}

// chanListener is the internal http.Server's listener: the handshake
// goroutines hand it the connections that are plain HTTP.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// deliver hands c to the http.Server; false once the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// prefixConn replays the bytes the router already read before reading
// from the socket again.
type prefixConn struct {
	net.Conn
	mu     sync.Mutex
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// takePrefix returns and forgets the bytes not replayed yet.
func (c *prefixConn) takePrefix() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.prefix
	c.prefix = nil
	return p
}

// SyscallConn exposes the socket, for a WebSocket upgrade over HTTP.
func (c *prefixConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}
