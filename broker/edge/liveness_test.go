//go:build linux

package edge

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestHeartbeatsAndPings(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{HeartbeatInterval: 300 * time.Millisecond, PingInterval: 250 * time.Millisecond})
	c := dial(t, te.url)
	var beats, pings int
	deadline := time.Now().Add(1300 * time.Millisecond)
	for time.Now().Before(deadline) {
		h, p, err := c.frame(time.Until(deadline))
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch h.OpCode {
		case ws.OpPing:
			pings++
		case ws.OpText:
			ev, err := proto.DecodeEvent(p)
			if err != nil || ev.Type != proto.EventHeartbeat {
				t.Fatalf("got %s (%v), want Heartbeat", p, err)
			}
			if d := time.Since(ev.Timestamp); d < -time.Second || d > 2*time.Second {
				t.Errorf("heartbeat timestamp %v is %s off", ev.Timestamp, d)
			}
			beats++
		}
	}
	// First ones at a random point of the interval, then every interval.
	if beats < 3 || beats > 5 {
		t.Errorf("%d heartbeats in 1.3s at 300ms, want 3 to 5", beats)
	}
	if pings < 4 || pings > 6 {
		t.Errorf("%d pings in 1.3s at 250ms, want 4 to 6", pings)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{IdleTimeout: 600 * time.Millisecond})
	c := dial(t, te.url)
	start := time.Now()
	code, reason := c.expectClose(3 * time.Second)
	if code != ws.StatusGoingAway || reason != "idle timeout" {
		t.Errorf("close %d %q, want 1001 idle timeout", code, reason)
	}
	if d := time.Since(start); d < 550*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("closed after %s, want about 600ms", d)
	}
	c.expectEOF(2 * time.Second)
	wait.For(t, 10*time.Second, "unregistered", func() bool { return te.Edge.reg.len() == 0 })
	if got := testutil.ToFloat64(te.m.idleTimeouts); got != 1 {
		t.Errorf("idle timeouts = %v, want 1", got)
	}
	if got := testutil.ToFloat64(te.m.closedByReason[reasonIdleTimeout]); got != 1 {
		t.Errorf("closed{idle_timeout} = %v, want 1", got)
	}
}

func TestPongsKeepConnectionAlive(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{IdleTimeout: 600 * time.Millisecond, PingInterval: 200 * time.Millisecond})
	c := dial(t, te.url)
	deadline := time.Now().Add(1800 * time.Millisecond)
	pongs := 0
	for time.Now().Before(deadline) {
		h, p, err := c.frame(time.Until(deadline))
		if isTimeout(err) {
			break
		}
		if err != nil || h.OpCode == ws.OpClose {
			t.Fatalf("connection closed while answering pings: %v %v", h.OpCode, err)
		}
		if h.OpCode == ws.OpPing {
			c.sendFrame(ws.OpPong, p)
			pongs++
		}
	}
	if pongs < 5 {
		t.Errorf("answered %d pings, want at least 5", pongs)
	}
	if te.Edge.reg.len() != 1 {
		t.Errorf("connection closed though it answered every ping")
	}
}

// smallBufListener shrinks the send buffer of accepted sockets so that a
// client that does not read blocks the edge's writes quickly.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

func listenSmall(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return smallBufListener{ln}
}

// dialNonReader connects with a tiny receive buffer and never reads.
func dialNonReader(t *testing.T, url string) *client {
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	return dialWith(t, d, url)
}

// seedHistory fills the edge's history with an hour of snapshots, which
// makes include_history answers about 200 KB: enough to fill any socket.
func seedHistory(te *testEdge) proto.Snapshot {
	now := time.Now().Truncate(time.Second)
	var last proto.Snapshot
	for i := range 3600 {
		last = snap(now.Add(time.Duration(i-3600)*time.Second), uint64(1000+i*10))
		te.hist.add(last)
	}
	return last
}

func TestSlowClientIsConflatedOthersOnTime(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Listener: listenSmall(t), WriteTimeout: time.Minute})
	te.publishWait(seedHistory(te))

	slow := dialNonReader(t, te.url)
	slow.sendText(`{"include_history":true}`)
	good := dial(t, te.url)
	good.expectEvent(proto.EventSnapshot, 2*time.Second)

	var slowConn *conn
	wait.For(t, 10*time.Second, "slow connection blocked", func() bool {
		for _, c := range te.Edge.reg.all() {
			c.mu.Lock()
			blocked := c.queued() > 0
			c.mu.Unlock()
			if blocked {
				slowConn = c
				return true
			}
		}
		return false
	})
	last := time.Now()
	for range 3 {
		good.expectEvent(proto.EventSnapshot, 2*time.Second)
		if gap := time.Since(last); gap > 1300*time.Millisecond {
			t.Errorf("good client waited %s for a snapshot", gap)
		}
		last = time.Now()
		// Bounded: at most one unsent snapshot (plus one half written) and
		// the history frames, however long the client does not read.
		slowConn.mu.Lock()
		snaps, n, pending := 0, slowConn.queued(), 0
		if q := slowConn.q; q != nil {
			pending = q.bytes
			for _, f := range q.frames {
				if f.kind == frameSnap {
					snaps++
				}
			}
		}
		slowConn.mu.Unlock()
		if snaps > 2 || n > proto.NumMetrics+2 || pending > te.cfg.MaxPendingBytes {
			t.Errorf("slow queue: %d frames, %d snapshots, %d pending bytes", n, snaps, pending)
		}
	}
	if got := testutil.ToFloat64(te.m.conflated); got < 1 {
		t.Errorf("conflated = %v, want at least 1", got)
	}
	if !slowConn.isOpen() {
		t.Errorf("slow connection was closed, want it kept (conflated)")
	}
}

// History output has its own bound, MaxHistoryPendingBytes: a client that
// does not read a large history response is a slow consumer.
func TestSlowConsumerPendingLimit(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Listener: listenSmall(t), MaxHistoryPendingBytes: 64 << 10})
	te.publishWait(seedHistory(te))
	slow := dialNonReader(t, te.url)
	wait.For(t, 10*time.Second, "registered", func() bool { return te.Edge.reg.len() == 1 })
	slow.sendText(`{"include_history":true}`)
	wait.For(t, 10*time.Second, "slow consumer closed", func() bool { return te.Edge.reg.len() == 0 })
	if got := testutil.ToFloat64(te.m.closedByReason[reasonSlowConsumer]); got != 1 {
		t.Errorf("closed{slow_consumer} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(te.m.slowConsumers); got != 1 {
		t.Errorf("slow consumer disconnects = %v, want 1", got)
	}
}

func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Listener: listenSmall(t), WriteTimeout: 500 * time.Millisecond})
	te.publishWait(seedHistory(te))
	slow := dialNonReader(t, te.url)
	wait.For(t, 10*time.Second, "registered", func() bool { return te.Edge.reg.len() == 1 })
	start := time.Now()
	slow.sendText(`{"include_history":true}`)
	wait.For(t, 10*time.Second, "write timeout", func() bool { return te.Edge.reg.len() == 0 })
	if d := time.Since(start); d < 450*time.Millisecond || d > 2*time.Second {
		t.Errorf("closed after %s, want about 500ms", d)
	}
	if got := testutil.ToFloat64(te.m.closedByReason[reasonWriteTimeout]); got != 1 {
		t.Errorf("closed{write_timeout} = %v, want 1", got)
	}
}
