package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// One listener, one port. The accept loop only accepts and admits (limits.go):
// each connection's request head is read by a handshake goroutine (at most
// MaxHandshakes at a time, each bounded by HandshakeTimeout), so a slow or
// bogus client never holds up accept. "GET /ws/metrics" is admitted
// (admit.go: origin, token, upgrade rate, scope) and upgraded in place by
// gobwas/ws from the bytes already read; anything else goes, those bytes
// replayed, to the internal http.Server through a channel-fed listener.

const (
	// handshakeQueueWait: when every handshake slot is taken for longer,
	// new connections get 503 (counted in handshakes_rejected_total).
	handshakeQueueWait = 100 * time.Millisecond
	// refusalWriteTimeout bounds writing a refusal from the accept loop.
	refusalWriteTimeout = 50 * time.Millisecond
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
		en, v := e.limits.open(addrOf(nc.RemoteAddr()))
		if full, drop := v.dropped(); drop {
			e.m.rejected(e.verdictRejection(full).reason)
			_ = nc.Close()
			continue
		}
		if !e.acquireHandshake() {
			e.m.handshakesRejected.Inc()
			e.refuseNow(nc, &upgradeRejection{status: 503, reason: rejectHandshakes,
				msg: "too many connections in their handshake; retry shortly", header: "Retry-After: 1\r\n"})
			e.releaseAdmission(en, v)
			continue
		}
		e.hsWG.Add(1)
		go e.handshake(nc, en, v)
	}
}

// refuseNow answers a fresh socket without reading it and closes it.
func (e *Edge) refuseNow(nc net.Conn, r *upgradeRejection) {
	_ = nc.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
	_, _ = nc.Write(e.reject(r))
	_ = nc.Close()
}

// releaseAdmission undoes limits.open for a socket that is closed before
// anything took it over.
func (e *Edge) releaseAdmission(en *addrEntry, v admitVerdict) {
	if v == admitOK {
		e.limits.close(en)
	} else {
		e.limits.doneRefusing(en)
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

// handshake routes one new connection admitted with verdict v: a refused
// one is answered (429/503, or /healthz) and closed; an admitted one's
// entry passes to whatever takes the socket over.
//
// With Config.TLS, the TLS handshake happens here first, within
// HandshakeTimeout, and nc is the TLS connection over raw.
func (e *Edge) handshake(raw net.Conn, en *addrEntry, v admitVerdict) {
	nc := raw
	defer func() {
		<-e.hsSem
		e.hsWG.Done()
	}()
	handedOff := false
	defer func() {
		if v == admitOK {
			e.limits.handshakeDone(en)
		}
		if !handedOff {
			e.releaseAdmission(en, v)
		}
	}()
	if !e.trackHandshake(raw) {
		_ = raw.Close()
		return
	}
	defer func() {
		if !handedOff && e.untrackHandshake(raw) {
			_ = raw.Close()
		}
	}()
	_ = raw.SetDeadline(time.Now().Add(e.cfg.HandshakeTimeout))
	if e.cfg.TLS != nil {
		tc, err := e.serverTLS(e.hsCtx, raw)
		if err != nil {
			return
		}
		nc = tc
	}
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
	if v != admitOK {
		if healthzRequest(buf[:lineEnd]) {
			_, _ = nc.Write(e.healthzResponse())
		} else {
			_, _ = nc.Write(e.reject(e.verdictRejection(v)))
		}
		return
	}
	toHTTP := func() {
		_ = nc.SetDeadline(time.Time{})
		handedOff = true
		if !e.untrackHandshake(raw) {
			e.limits.close(en)
			return // closed by shutdown
		}
		pc := &prefixConn{Conn: nc, prefix: bytes.Clone(buf), e: e, lim: en}
		if !e.httpLn.deliver(pc) {
			_ = pc.Close()
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
	if _, ok := raw.(syscall.Conn); !ok {
		// Only a socket can join epoll (a Config.Listener wrapping conns).
		e.log.Error("accepted connection has no file descriptor; cannot serve WebSocket", "type", fmt.Sprintf("%T", nc))
		_, _ = nc.Write(respUnavailable)
		return
	}
	init, rej := e.admitUpgrade(e.hsCtx, buf[:lineEnd], buf[:headEnd], en)
	if rej != nil {
		_, _ = nc.Write(e.reject(rej))
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
	if !e.untrackHandshake(raw) {
		init.st.release()
		handedOff = true
		e.limits.close(en)
		return
	}
	handedOff = true
	pc, err := e.pollable(nc)
	if err != nil {
		e.log.Error("serve TLS connection", "err", err)
		init.st.release()
		e.limits.close(en)
		_ = nc.Close()
		return
	}
	if !e.attach(pc, leftover, init) {
		e.limits.close(en)
		_ = pc.Close()
	}
}

// admitUpgrade applies admission to a raw upgrade request: origin, token,
// upgrade rate, then the URL's scope (grant first, then lookup).
func (e *Edge) admitUpgrade(ctx context.Context, line, head []byte, en *addrEntry) (connInit, *upgradeRejection) {
	h, err := parseHead(head)
	if err != nil {
		return connInit{}, &upgradeRejection{status: http.StatusBadRequest, msg: err.Error(), kind: errTypeHandshake}
	}
	query := requestQuery(line)
	return e.admitRequest(ctx, h, query, en)
}

// admitRequest is admission for both upgrade paths.
func (e *Edge) admitRequest(ctx context.Context, h upgradeHead, query string, en *addrEntry) (connInit, *upgradeRejection) {
	if !e.origins.allows(h.origins, h.host) {
		return connInit{}, originRejection()
	}
	client := e.limits.client(en, h.forwardedFor, h.realIP)
	if wait := e.limits.take(client, bucketUpgrade); wait > 0 {
		return connInit{}, rateRejection(rejectUpgradeRate,
			fmt.Sprintf("an address may open %g WebSocket connections per second", e.cfg.UpgradesPerSecond), wait)
	}
	g, rej := e.authenticate(ctx, h.authorization, query, h.protocols)
	if rej != nil {
		return connInit{}, rej
	}
	init, rej := e.upgradeTarget(ctx, query, g, client)
	init.lim = en
	return init, rej
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
// and reports whether it took ownership of nc (it then has closed nc and
// kept only the socket's descriptor).
func (e *Edge) attach(nc net.Conn, leftover []byte, init connInit) bool {
	fd, err := takeFD(nc)
	if err != nil {
		init.st.release()
		e.log.Error("take over upgraded connection", "err", err, "type", fmt.Sprintf("%T", nc))
		return false
	}
	e.noteUpgrade()
	c := newConn(e, fd)
	c.shard = e.pickShard()
	c.lim, c.rate = init.lim, init.rate
	if !init.grant.All() {
		c.grant = &init.grant
	}
	if exp := init.grant.Expires(); !exp.IsZero() {
		c.expires = max(c.opened+int64(exp.Sub(e.cfg.Now())), 1)
	}
	e.m.opened.Inc()

	c.mu.Lock()
	c.scope.release()
	c.scope = init.st
	c.setSubLocked(init.sub)
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

// errNoFD is a connection that is not a socket (a Config.Listener wrapping
// conns): it cannot join epoll.
var errNoFD = errors.New("connection has no file descriptor")

// takeFD returns a descriptor of nc's socket that the caller owns, and
// closes nc. A connection keeps only this descriptor: the net.Conn would
// cost about 950 B more per idle subscriber (netFD, addresses, runtime poll
// descriptor). The descriptor is a duplicate (F_DUPFD_CLOEXEC) of nc's, so
// closing nc leaves the socket open; nc.Close also removes the socket from
// Go's netpoller, which must not see it again. Any socket works, e.g. one
// end of a socketpair relaying a TLS connection. O_NONBLOCK belongs to the
// socket, shared by both descriptors; it is set again in case nc's was
// blocking, since the poller and writes must never block.
func takeFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, errNoFD
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("get raw connection: %w", err)
	}
	fd, dupErr := -1, error(nil)
	err = rc.Control(func(f uintptr) {
		if fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0); dupErr == nil {
			dupErr = unix.SetNonblock(fd, true)
		}
	})
	switch {
	case err != nil:
		return -1, fmt.Errorf("get socket descriptor: %w", err)
	case dupErr != nil:
		if fd >= 0 {
			_ = unix.Close(fd)
		}
		return -1, fmt.Errorf("duplicate socket descriptor: %w", dupErr)
	}
	_ = nc.Close()
	return fd, nil
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
// from the socket again. It holds its address's admission entry until it
// is closed or a WebSocket takes the entry over (takeAdmission).
type prefixConn struct {
	net.Conn
	e      *Edge
	mu     sync.Mutex
	prefix []byte
	lim    *addrEntry
}

// Close closes the socket and releases its admission once.
func (c *prefixConn) Close() error {
	c.mu.Lock()
	lim := c.lim
	c.lim = nil
	c.mu.Unlock()
	c.e.limits.close(lim)
	return c.Conn.Close()
}

// admission is the entry while the connection holds it.
func (c *prefixConn) admission() *addrEntry {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lim
}

// takeAdmission hands the admission entry to the caller.
func (c *prefixConn) takeAdmission() *addrEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	lim := c.lim
	c.lim = nil
	return lim
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
