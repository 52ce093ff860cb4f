//go:build linux

package benchmark

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/broker/benchmark/naiveedge"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// subject is the server under test: the edge, the naive baseline or the
// raw loop, behind one face.
type subject interface {
	run(ctx context.Context) error
	shutdown(ctx context.Context) error
	addr() string
	// ready reports whether the server holds a snapshot to serve.
	ready() bool
	counters() (counters, error)
}

// never is the setting that switches an edge timer off (it caps at 100 y).
const never = 100 * 365 * 24 * time.Hour

// serverReadyTimeout bounds the wait for the first snapshot.
const serverReadyTimeout = 15 * time.Second

func runServer(ctx context.Context, spec serverSpec, lines *bufio.Scanner, enc *json.Encoder) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("child", "server", "mode", spec.Mode)
	quiet := slog.New(slog.DiscardHandler)
	node, err := natsnode.New(natsnode.Config{DontListen: true, DisableJetStream: true, Logger: quiet})
	if err != nil {
		return err
	}
	if err := node.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = node.Shutdown(context.Background()) }()
	nc, err := node.Connect(nats.Name("bench-server"))
	if err != nil {
		return err
	}
	defer nc.Close()
	pub, err := node.Connect(nats.Name("bench-aggregator-stub"))
	if err != nil {
		return err
	}
	defer pub.Close()

	sut, err := newSubject(spec, nc, log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	runCtx, cancelRun := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		runErr <- sut.run(runCtx)
	}()
	go func() {
		defer wg.Done()
		(&stub{nc: pub, log: log, now: time.Now}).run(runCtx)
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sut.shutdown(sctx); err != nil {
			log.Warn("shut down", "err", err)
		}
		cancelRun()
		wg.Wait()
	}()

	if err := wait.Until(ctx, serverReadyTimeout, sut.ready); err != nil {
		select {
		case err := <-runErr:
			return fmt.Errorf("start %s server: %w", spec.Mode, err)
		default:
		}
		return fmt.Errorf("wait for the first snapshot: %w", err)
	}
	if err := enc.Encode(message{Event: evReady, Addr: sut.addr()}); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	for {
		cmd, ok, err := nextCommand(lines)
		if err != nil || !ok {
			return err
		}
		if cmd.Cmd != cmdSample {
			return fmt.Errorf("server command %q: %w", cmd.Cmd, errBadSpec)
		}
		s, err := takeSample(sut, cmd.GC)
		if err != nil {
			return err
		}
		if err := enc.Encode(message{Event: evSample, Sample: &s}); err != nil {
			return fmt.Errorf("report sample: %w", err)
		}
	}
}

// takeSample reads the process's figures; with gc, after a full collection
// that also returns free memory to the OS, so that RSS is what is in use.
func takeSample(sut subject, gc bool) (serverSample, error) {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pm, err := readProcMemory()
	if err != nil {
		return serverSample{}, err
	}
	c, err := sut.counters()
	if err != nil {
		return serverSample{}, err
	}
	user, sys := processCPUSplit()
	return serverSample{
		WallNanos:    time.Now().UnixNano(),
		CPUNanos:     int64(user + sys),
		SysNanos:     int64(sys),
		RSSBytes:     pm.rss,
		RSSFileBytes: pm.file,
		RSSAnonBytes: pm.anon,
		Mem:          readMemClasses(pm.threads),
		HeapBytes:    ms.HeapAlloc,
		HeapInuse:    ms.HeapInuse,
		RuntimeBytes: ms.MSpanInuse + ms.MCacheInuse + ms.GCSys + ms.BuckHashSys + ms.OtherSys,
		StackBytes:   ms.StackInuse,
		Mallocs:      ms.Mallocs,
		NumGC:        ms.NumGC,
		Goroutines:   runtime.NumGoroutine(),
		CollectedGC:  gc,
		counters:     c,
	}, nil
}

func newSubject(spec serverSpec, nc *nats.Conn, log *slog.Logger) (subject, error) {
	if _, err := ParseMode(string(spec.Mode)); err != nil {
		return nil, fmt.Errorf("server mode %q: %w", spec.Mode, errBadSpec)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	var ln net.Listener = tl
	if spec.SendBuffer > 0 {
		ln = sendBufferListener{Listener: tl, size: spec.SendBuffer}
	}
	var sut subject
	switch spec.Mode {
	case ModeEdge:
		sut, err = newEdgeSubject(ln, nc, log)
	case ModeNaive:
		var s *naiveedge.Server
		if s, err = naiveedge.New(naiveedge.Config{Listener: ln, NATS: nc, Logger: log}); err == nil {
			sut = naiveSubject{s}
		}
	case ModeRaw:
		sut, err = newRawServer(ln, nc, log)
	}
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return sut, nil
}

// sendBufferListener bounds the send side of every connection it accepts:
// SO_SNDBUF, and TCP_NOTSENT_LOWAT at one byte, so that once the peer's
// receive window is shut the kernel takes no more than one more write
// and the server's own policy (queue, conflate, block or drop) is what
// happens next.
type sendBufferListener struct {
	net.Listener
	size int
}

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	// Neither can fail on an open TCP socket; the kernel clamps the size.
	_ = tc.SetWriteBuffer(l.size)
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, 1)
		})
	}
	return c, nil
}

// edgeSubject is the real edge with its own metrics registry, which is
// where its counters come from.
type edgeSubject struct {
	e   *edge.Edge
	reg *prometheus.Registry
}

func newEdgeSubject(ln net.Listener, nc *nats.Conn, log *slog.Logger) (*edgeSubject, error) {
	reg := prometheus.NewRegistry()
	e, err := edge.New(edge.Config{
		Listener: ln, NATS: nc, Registerer: reg, Namespace: edgeNamespace, Logger: log,
		// Off, so that every mode does the same work: Snapshots only.
		HeartbeatInterval: never, PingInterval: never, IdleTimeout: never,
		// The harness loads the edge from a few loopback addresses: no
		// per-address admission limits.
		MaxConnsPerAddr: 1 << 30, MaxHandshakesPerAddr: 1 << 30, UpgradesPerSecond: 1e9, UpgradeBurst: 1 << 30,
	})
	if err != nil {
		return nil, err
	}
	return &edgeSubject{e: e, reg: reg}, nil
}

const edgeNamespace = "meridian"

func (s *edgeSubject) run(ctx context.Context) error      { return s.e.Run(ctx) }
func (s *edgeSubject) shutdown(ctx context.Context) error { return s.e.Shutdown(ctx) }
func (s *edgeSubject) addr() string                       { return s.e.Addr().String() }
func (s *edgeSubject) ready() bool {
	_, ok := s.e.Ready()
	return ok
}

func (s *edgeSubject) counters() (counters, error) {
	mfs, err := s.reg.Gather()
	if err != nil {
		return counters{}, fmt.Errorf("gather edge metrics: %w", err)
	}
	return edgeCounters(mfs)
}

// edgeCounters picks the benchmark's figures out of the edge's metrics.
func edgeCounters(mfs []*dto.MetricFamily) (counters, error) {
	var c counters
	found := 0
	for _, mf := range mfs {
		sum := 0.0
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		switch mf.GetName() {
		case edgeNamespace + "_edge_messages_sent_total":
			c.Deliveries = uint64(sum)
			found++
		case edgeNamespace + "_edge_snapshots_conflated_total":
			c.Conflations = uint64(sum)
			found++
		case edgeNamespace + "_edge_slow_consumer_disconnects_total":
			c.Dropped = uint64(sum)
			found++
		case edgeNamespace + "_edge_connections":
			c.Connections = int64(sum)
			found++
		case edgeNamespace + "_edge_tick_lag_seconds":
			if ms := mf.GetMetric(); len(ms) == 1 {
				c.TickLag = histOf(ms[0].GetHistogram())
				found++
			}
		}
	}
	if found != 5 {
		return c, errors.New("edge metrics: messages_sent_total, snapshots_conflated_total, slow_consumer_disconnects_total, connections or tick_lag_seconds missing")
	}
	return c, nil
}

// naiveSubject adapts naiveedge.Server.
type naiveSubject struct{ s *naiveedge.Server }

func (n naiveSubject) run(ctx context.Context) error      { return n.s.Run(ctx) }
func (n naiveSubject) shutdown(ctx context.Context) error { return n.s.Shutdown(ctx) }
func (n naiveSubject) addr() string                       { return n.s.Addr().String() }
func (n naiveSubject) ready() bool                        { return n.s.HasSnapshot() }

func (n naiveSubject) counters() (counters, error) {
	st := n.s.Stats()
	return counters{
		Connections: int64(st.Connections),
		Deliveries:  st.Deliveries,
		Conflations: st.SkippedTicks,
		Dropped:     st.WriteErrors,
	}, nil
}
