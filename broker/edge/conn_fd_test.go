//go:build linux

package edge

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/integration/wait"
)

// An upgraded connection keeps one descriptor of its socket and no
// net.Conn (takeFD): the socket appears exactly once among the process's
// descriptors while open, and not at all once the client has gone. Keeping
// the net.Conn, or the duplicate after close, shows up as a second or a
// leaked descriptor; the connection still delivers and reads through the
// one it kept.
func TestConnectionKeepsOneDescriptor(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))
	cl := dial(t, te.url)
	cl.expectEvent("Snapshot", 5*time.Second)
	wait.For(t, 10*time.Second, "connection registered", func() bool { return te.reg.len() == 1 })
	c := te.onlyConn()
	sock, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", c.fd))
	if err != nil {
		t.Fatal(err)
	}
	if n := descriptorsOf(t, sock); n != 1 {
		t.Fatalf("%s is open as %d descriptors, want 1", sock, n)
	}
	cl.sendText(`{"interval_seconds": 7}`) // input goes through the kept descriptor
	wait.For(t, 10*time.Second, "subscription applied", func() bool { return c.interval.Load() == 7 })

	cl.conn.Close()
	wait.For(t, 10*time.Second, "connection closed", func() bool { return te.reg.len() == 0 })
	wait.For(t, 10*time.Second, "socket released", func() bool { return descriptorsOf(t, sock) == 0 })
}

// descriptorsOf counts the process's descriptors that name target (such as
// "socket:[123]").
func descriptorsOf(t *testing.T, target string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == target {
			n++
		}
	}
	return n
}
