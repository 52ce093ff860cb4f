//go:build linux

package edge

import (
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/proto"
)

// bareEdge is an Edge with defaults and metrics but no sockets, for
// exercising the scheduler and the delivery path directly.
func bareEdge(tb testing.TB) *Edge {
	tb.Helper()
	e := &Edge{
		cfg: Config{
			HeartbeatInterval: noTimer, PingInterval: noTimer,
			IdleTimeout: noTimer, WriteTimeout: noTimer,
			Logger: slog.New(slog.DiscardHandler),
		}.withDefaults(),
		base: time.Now(),
		log:  slog.New(slog.DiscardHandler),
	}
	m, err := newMetrics(e, "bench", nil)
	if err != nil {
		tb.Fatal(err)
	}
	e.m = m
	e.scopes = newScopeTable()
	e.hist = newHistoryServer(&e.cfg, nil, e.log, m.historyLoadErrors)
	e.pool = newWorkPool(e, 1)
	e.lookups = make(chan struct{}, 1)
	return e
}

// tcpConns opens n loopback TCP pairs; the server sides become conns of e
// on shard s (registered nowhere else). The client sides are bare
// non-blocking sockets outside Go's netpoller, with large receive buffers,
// emptied by the returned drain function: no reader is woken per write, so
// that a benchmark measures the writer's cost, not the wake-ups of readers
// on the same two cores (which otherwise dominate and vary with timing).
func tcpConns(tb testing.TB, e *Edge, s *shard, n int) ([]*conn, func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	conns := make([]*conn, 0, n)
	clients := make([]int, 0, n)
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			tb.Fatal(err)
		}
		clients = append(clients, fd)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		if err != nil && err != unix.EINPROGRESS {
			tb.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		sfd, err := takeFD(sc)
		if err != nil {
			tb.Fatal(err)
		}
		c := newConn(e, sfd)
		c.shard = s
		c.nextBeat, c.nextPing = farFuture, farFuture
		c.sentSnap = true
		conns = append(conns, c)
	}
	buf := make([]byte, 256<<10)
	drain := func() {
		for _, fd := range clients {
			for {
				if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
					break
				}
			}
		}
	}
	tb.Cleanup(func() {
		for _, c := range conns {
			unix.Close(int(c.fd))
		}
		for _, fd := range clients {
			unix.Close(fd)
		}
	})
	return conns, drain
}

// farFuture (ns) and everything (a tick) let a test fire connections at
// will: every snapshot is due at tick everything, heartbeats and pings
// never are.
const (
	farFuture  = int64(1) << 62
	everything = int64(1) << 36
)

// drainEvery is how many delivery rounds fit in the client buffers.
const drainEvery = 64

func BenchmarkEncodeSnapshot(b *testing.B) {
	s := snap(time.Now(), 123456789)
	sets := []struct {
		name string
		set  proto.MetricSet
	}{
		{"all", proto.AllMetrics},
		{"guide", proto.GuideMetrics},
		{"one", proto.SetOf(proto.RequestsTotal)},
		{"three", proto.SetOf(proto.RequestsTotal, proto.AvgResponseTime, proto.SuccessRate)},
	}
	for _, tt := range sets {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			var frame []byte
			for b.Loop() {
				frame, buf = encodeSnapshotFrame(buf[:0], &s, tt.set)
			}
			b.SetBytes(int64(len(frame)))
		})
	}
}

// BenchmarkSnapshotFrameLookup is what each subscriber costs for encoding:
// a cached frame lookup.
func BenchmarkSnapshotFrameLookup(b *testing.B) {
	sf := newSnapFrames(snap(time.Now(), 1))
	set := proto.SetOf(proto.RequestsTotal, proto.SuccessRate)
	sf.frame(set)
	b.ReportAllocs()
	for b.Loop() {
		_ = sf.frame(set)
	}
}

// BenchmarkSnapshotFrameForms looks a frame up among many forms: the last
// inline one, and one beyond them (only clients naming many different
// strict sets make those).
func BenchmarkSnapshotFrameForms(b *testing.B) {
	sf := newSnapFrames(snap(time.Now(), 1))
	for set := proto.MetricSet(1); set <= inlineForms+1; set++ {
		sf.frame(set)
	}
	for _, tt := range []struct {
		name string
		set  proto.MetricSet
	}{{"last-inline", inlineForms}, {"beyond-inline", inlineForms + 1}} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = sf.frame(tt.set)
			}
		})
	}
}

// BenchmarkScheduleTick moves one connection of 10 000 to a new slot, as
// every delivery does.
func BenchmarkScheduleTick(b *testing.B) {
	e := bareEdge(b)
	s := newShard(e)
	conns := make([]*conn, 10000)
	for i := range conns {
		conns[i] = &conn{e: e, shard: s}
		s.link(conns[i], int64(i%100))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := conns[i%len(conns)]
		s.unlink(c)
		s.link(c, c.due+100)
		i++
	}
}

// BenchmarkDeliver delivers one snapshot frame to each of N connections
// through the scheduler's full path (lock, due checks, cached frame,
// non-blocking write, metrics, reschedule); "raw" is the bare write loop
// over the same sockets, the floor to compare with. Besides wall time per
// delivery it reports cpu-ns/delivery, the benchmark thread's own CPU time
// (CLOCK_THREAD_CPUTIME_ID), which other load on the machine does not
// inflate.
func BenchmarkDeliver(b *testing.B) {
	for _, n := range []int{100, 1000} {
		e := bareEdge(b)
		e.scopes.cluster.latest.Store(newSnapFrames(snap(time.Now(), 1)))
		frame := e.scopes.cluster.latest.Load().frame(proto.GuideMetrics)
		s := newShard(e)
		conns, drain := tcpConns(b, e, s, n)
		b.Run(fmt.Sprintf("edge/N=%d", n), func(b *testing.B) {
			sent := testutil.ToFloat64(e.m.msgsSent)
			deliveryLoop(b, n, drain, func() {
				for _, c := range conns {
					s.fire(c, everything)
				}
			})
			if got := testutil.ToFloat64(e.m.msgsSent) - sent; got != float64(b.N*n) {
				b.Errorf("%v of %d deliveries written whole", got, b.N*n)
			}
		})
		b.Run(fmt.Sprintf("raw/N=%d", n), func(b *testing.B) {
			deliveryLoop(b, n, drain, func() {
				for _, c := range conns {
					if n, err := unix.Write(int(c.fd), frame); n != len(frame) || err != nil {
						b.Fatalf("raw write: %d, %v", n, err)
					}
				}
			})
		})
	}
}

// deliveryLoop runs round b.N times, draining the clients (untimed) every
// drainEvery rounds, and reports per-delivery wall and thread CPU time.
func deliveryLoop(b *testing.B, n int, drain, round func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	var cpu time.Duration
	for i := 0; i < b.N; {
		b.StopTimer()
		drain()
		b.StartTimer()
		c0 := threadCPU()
		for j := 0; j < drainEvery && i < b.N; j++ {
			round()
			i++
		}
		cpu += threadCPU() - c0
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/delivery")
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// TestSteadyStateDeliveryAllocatesNothing pins the zero-allocation
// promise of the delivery path.
func TestSteadyStateDeliveryAllocatesNothing(t *testing.T) {
	e := bareEdge(t)
	e.scopes.cluster.latest.Store(newSnapFrames(snap(time.Now(), 1)))
	s := newShard(e)
	conns, drain := tcpConns(t, e, s, 8)
	k := everything
	deliver := func() {
		for _, c := range conns {
			s.fire(c, k)
		}
		drain()
	}
	deliver() // warm: frame built
	if got := testing.AllocsPerRun(200, deliver); got != 0 {
		t.Errorf("delivery allocates %v times per round, want 0", got)
	}
	// AllocsPerRun runs once more to warm up.
	if sent := testutil.ToFloat64(e.m.msgsSent); sent != 8*202 {
		t.Errorf("%v frames written, want %d", sent, 8*202)
	}
}
