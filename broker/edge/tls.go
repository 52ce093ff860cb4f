package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TLS. The poller reads sockets by descriptor and the writers write on the
// descriptor, which a TLS connection cannot offer (the record layer lives in
// user space; kTLS is not available to Go's crypto/tls). So a TLS
// connection is terminated by the handshake goroutine and, once it is a
// WebSocket, relayed through a socketpair: the edge serves the socketpair's
// end exactly like a TCP socket, and two relay goroutines copy between it
// and the TLS connection. The cost, accepted for wss only: two goroutines,
// two relay buffers and crypto/tls's own buffers per connection (see
// BenchmarkIdleConnMemory for the figures), and one extra copy through the
// kernel per frame. Plain ws connections keep the zero-goroutine path.

// relayBuf is the copy buffer of each relay direction.
const relayBuf = 4 << 10

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

var relayBufs = sync.Pool{New: func() any {
	b := make([]byte, relayBuf)
	return &b
}}

// replayConn returns b before reading from Conn again.
type replayConn struct {
	net.Conn
	b []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.b) > 0 {
		n := copy(p, c.b)
		c.b = c.b[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// errPlaintext: a plain HTTP request on the TLS listener.
var errPlaintext = errors.New("plain HTTP on a TLS listener")

// serverTLS completes the TLS handshake of nc (within nc's deadline). A
// client speaking plain HTTP is answered 400 (counted as plaintext).
func (e *Edge) serverTLS(ctx context.Context, nc net.Conn) (*tls.Conn, error) {
	var first [1]byte
	if _, err := io.ReadFull(nc, first[:]); err != nil {
		return nil, err
	}
	if first[0] != tlsRecordHandshake {
		_, _ = nc.Write(e.reject(&upgradeRejection{status: http.StatusBadRequest, reason: rejectPlaintext,
			msg: "this port requires TLS: use https:// or wss://"}))
		return nil, errPlaintext
	}
	tc := tls.Server(&replayConn{Conn: nc, b: first[:]}, e.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		e.m.errorsByType[errTypeHandshake].Inc()
		e.log.Debug("TLS handshake failed", "err", err, "remote", nc.RemoteAddr().String())
		return nil, err
	}
	return tc, nil
}

// pollable returns a connection the poller can serve for nc: nc itself
// when it has a descriptor, else (TLS) the edge's end of a socketpair
// relayed to nc. The relay owns nc from then on.
func (e *Edge) pollable(nc net.Conn) (net.Conn, error) {
	if pc, ok := nc.(*prefixConn); ok {
		if _, tlsConn := pc.Conn.(*tls.Conn); !tlsConn {
			return nc, nil
		}
	} else if _, ok := nc.(*tls.Conn); !ok {
		return nc, nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create relay socketpair: %w", err)
	}
	ours, err := fileConn(fds[0], "edge-relay")
	if err != nil {
		unix.Close(fds[1])
		return nil, err
	}
	peer, err := fileConn(fds[1], "edge-relay-peer")
	if err != nil {
		ours.Close()
		return nil, err
	}
	r := &relay{tc: nc, peer: peer.(*net.UnixConn)}
	r.left.Store(2)
	e.relays.Add(2)
	go func() { defer e.relays.Done(); r.in() }()
	go func() { defer e.relays.Done(); r.out() }()
	return ours, nil
}

func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("relay socket: %w", err)
	}
	return c, nil
}

// relay is one TLS connection's pair of copy goroutines; the second to
// finish closes both ends.
type relay struct {
	tc   net.Conn
	peer *net.UnixConn
	left atomic.Int32
}

func (r *relay) finish() {
	if r.left.Add(-1) == 0 {
		_ = r.tc.Close()
		_ = r.peer.Close()
	}
}

// in copies client → edge. At the client's EOF it half-closes the edge's
// side, which the edge reads as the peer leaving; on an error it tears both
// down.
func (r *relay) in() {
	defer r.finish()
	bp := relayBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(r.peer, onlyReader{r.tc}, *bp)
	relayBufs.Put(bp)
	if err == nil {
		_ = r.peer.CloseWrite()
		return
	}
	_ = r.tc.Close()
	_ = r.peer.Close()
}

// out copies edge → client. When the edge closes its end, the client gets
// close_notify and lingerTimeout to close its side, after which in's read
// fails.
func (r *relay) out() {
	defer r.finish()
	bp := relayBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(onlyWriter{r.tc}, r.peer, *bp)
	relayBufs.Put(bp)
	if err != nil {
		_ = r.tc.Close()
		_ = r.peer.Close()
		return
	}
	if cw, ok := r.tc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = r.tc.SetReadDeadline(time.Now().Add(lingerTimeout))
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo, so that CopyBuffer
// uses the pooled buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
