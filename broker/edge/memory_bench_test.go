//go:build linux

package edge

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/integration/wait"
)

// BenchmarkIdleConnection reports what one idle subscriber costs the edge
// in-process: the growth of the live heap (heap-B/conn) and of everything
// the runtime holds (inuse-B/conn: heap, stacks, spans, netpoll descriptors;
// see memInUse) over n real loopback WebSocket connections, upgraded
// through the edge's listener and registered with epoll, with no snapshot
// to send. The clients are bare blocking sockets (a descriptor each, no Go
// objects), so nothing but the edge's side is counted. Two sizes show
// whether the cost is flat. Run with -benchtime=1x.
func BenchmarkIdleConnection(b *testing.B) {
	for _, n := range []int{1000, 4000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			te := startEdge(b, Config{
				// One loopback address opens them all: no per-address limits.
				MaxConnsPerAddr: 1 << 30, MaxHandshakesPerAddr: 1 << 30, UpgradesPerSecond: 1e9, UpgradeBurst: 1 << 30,
			})
			addr := te.Addr().(*net.TCPAddr).AddrPort()
			fds := make([]int, 0, n)
			b.Cleanup(func() {
				for _, fd := range fds {
					unix.Close(fd)
				}
			})
			before := memInUse()
			for range n {
				fds = append(fds, rawUpgrade(b, addr))
			}
			wait.For(b, 30*time.Second, "all connections registered", func() bool { return te.reg.len() == n })
			after := memInUse()
			for b.Loop() {
			}
			b.ReportMetric(float64(after.heap-before.heap)/float64(n), "heap-B/conn")
			b.ReportMetric(float64(after.total-before.total)/float64(n), "inuse-B/conn")
		})
	}
}

// rawUpgrade opens a blocking client socket to addr, upgrades it to a
// WebSocket and returns its descriptor.
func rawUpgrade(tb testing.TB, addr netip.AddrPort) int {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("socket: %v", err)
	}
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := connectRetry(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		tb.Fatalf("connect: %v", err)
	}
	if _, err := ignoringEINTR(func() (int, error) { return unix.Write(fd, []byte(upgradeRequest(wsPath))) }); err != nil {
		unix.Close(fd)
		tb.Fatalf("write upgrade request: %v", err)
	}
	var head [512]byte
	got := 0
	for !bytes.Contains(head[:got], []byte("\r\n\r\n")) {
		n, err := ignoringEINTR(func() (int, error) { return unix.Read(fd, head[got:]) })
		if err != nil || n <= 0 || got+n == len(head) {
			unix.Close(fd)
			tb.Fatalf("read upgrade response (%q): %v", head[:got], err)
		}
		got += n
	}
	if !bytes.HasPrefix(head[:got], []byte("HTTP/1.1 101 ")) {
		unix.Close(fd)
		tb.Fatalf("upgrade refused: %q", head[:got])
	}
	return fd
}

// connectRetry is a blocking connect that a signal (the Go runtime's
// preemption) does not fail: the connection then completes in the
// background, and poll says when.
func connectRetry(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := ignoringEINTR(func() (int, error) { return unix.Poll(pfd, 10_000) }); err != nil {
		return err
	}
	if soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
		return fmt.Errorf("connect: %w", errors.Join(err, unix.Errno(soErr)))
	}
	return nil
}

func ignoringEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
