//go:build linux

package edge

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// Clients that connect and send nothing, or half a request, never hold up
// anyone else's accept or upgrade, and are dropped after HandshakeTimeout.
func TestSlowHandshakesDoNotBlockAccept(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{HandshakeTimeout: 700 * time.Millisecond})
	te.publishWait(snap(time.Now(), 1))
	var slow []net.Conn
	for i := range 50 {
		c, err := net.Dial("tcp", te.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 1 {
			_, _ = io.WriteString(c, "GET /ws/metrics HTTP/1.1\r\nHost: x\r\n") // never finished
		}
		slow = append(slow, c)
	}
	start := time.Now()
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, time.Second)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("upgrade took %s behind 50 stalled handshakes", d)
	}
	for _, s := range slow {
		_ = s.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadAll(s); isTimeout(err) {
			t.Fatalf("stalled handshake not closed after HandshakeTimeout")
		}
	}
}

func TestHandshakeLimits(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	t.Run("head too large", func(t *testing.T) {
		c := rawDial(t, te.Addr().String())
		c.sendRaw([]byte("GET /ws/metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxRequestHead) + "\r\n\r\n"))
		c.readHTTPResponse(431)
	})
	t.Run("bad websocket version", func(t *testing.T) {
		c := rawDial(t, te.Addr().String())
		c.sendRaw([]byte(strings.Replace(upgradeRequest("/ws/metrics"), "Version: 13", "Version: 8", 1)))
		c.readHTTPResponse(426)
	})
	// Counted after the answer is written: wait for it.
	wait.For(t, 10*time.Second, "the handshake error counted", func() bool {
		return testutil.ToFloat64(te.m.errorsByType[errTypeHandshake]) >= 1
	})
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeHandshake]); got != 1 {
		t.Errorf("handshake errors = %v, want 1", got)
	}
}

func TestTooManyHandshakesAreShed(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartCore(t)
	e, err := New(Config{NATS: nc, Listen: "127.0.0.1:0", Logger: testLogger(t), HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.hsSem = make(chan struct{}, 2) // two handshakes at a time
	te := runEdge(t, e, nc)
	for range 2 {
		c, err := net.Dial("tcp", te.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	wait.For(t, 10*time.Second, "two handshakes in flight", func() bool { return len(e.hsSem) == 2 })
	extra, err := net.Dial("tcp", te.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(extra); isTimeout(err) {
		t.Fatalf("third connection not shed")
	}
	if got := testutil.ToFloat64(te.m.handshakesRejected); got != 1 {
		t.Errorf("handshakes rejected = %v, want 1", got)
	}
}

// FuzzRequestHead feeds arbitrary bytes to the request router: finding
// the request line and head, classifying the request, and the upgrade from
// the bytes read. None may panic, and the head must end at its first
// blank line.
func FuzzRequestHead(f *testing.F) {
	f.Add([]byte(upgradeRequest("/ws/metrics")))
	f.Add([]byte("GET /ws/metrics?x=1 HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"))
	f.Add([]byte("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nbody"))
	f.Add([]byte("\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if end := headTerminator(data); end >= 0 {
			head := data[:end]
			if !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n")) {
				t.Fatalf("head %q does not end with a blank line", head)
			}
			if headTerminator(head[:len(head)-1]) >= 0 {
				t.Fatalf("head %q is not cut at the first blank line", head)
			}
		}
		if i := lineTerminator(data); i >= 0 && data[i] != '\n' {
			t.Fatalf("line end %d is not a newline", i)
		}
		line := data
		if i := lineTerminator(data); i >= 0 {
			line = data[:i]
		}
		if isWebSocketRequest(line) && !bytes.HasPrefix(line, []byte("GET /ws/metrics")) {
			t.Fatalf("%q routed to the upgrader", line)
		}
		_ = hasUpgradeHeader(data)
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		_, _ = ws.Upgrader{}.Upgrade(rw)
	})
}
