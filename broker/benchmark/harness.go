package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"runtime"
	"slices"
	"time"
)

// Defaults for Config's zero fields.
const (
	DefaultSubscribers = 10000
	DefaultDuration    = 30 * time.Second
	DefaultSources     = 16
	DefaultConnectRate = 2000
	DefaultSettle      = 3 * time.Second
	DefaultIdleWindow  = 2 * time.Second
	DefaultSlowStall   = 12 * time.Second
	// DefaultWarmup is how many subscribers connect and leave before the
	// idle memory baseline (memory.go), at most half the first point.
	DefaultWarmup = 1000
	// NoWarmup as Config.Warmup takes the baseline before any connection.
	NoWarmup = -1
	// slowSendBuffer is SO_SNDBUF on the servers' sockets in a run with
	// slow subscribers: the kernel's minimum (about 4.5 KiB once clamped),
	// with TCP_NOTSENT_LOWAT at one byte (sendBufferListener), so that a
	// stalled client's backlog reaches the server's own policy within
	// seconds rather than after the megabytes loopback autotunes to.
	slowSendBuffer = 1
	// MinDuration leaves a window of ticks after the 1 s grace at its end.
	MinDuration = 3 * time.Second
	// fileReserve is the descriptors a child needs besides its sockets.
	fileReserve = 64
)

// ErrInvalidConfig wraps every problem Run finds with its Config.
var ErrInvalidConfig = errors.New("invalid benchmark config")

// ErrUnsupported is returned where the benchmark cannot run (not Linux).
var ErrUnsupported = errors.New("the benchmark needs Linux (epoll, /proc)")

// Config configures Run. Zero fields take the documented defaults.
type Config struct {
	// Subscribers per mode. Default 10 000; at most the hard RLIMIT_NOFILE
	// minus 64, since server and client each hold one socket per
	// subscriber (as root, Run raises the hard limit where it must).
	Subscribers int
	// MemoryPoints are subscriber counts below Subscribers, ascending, at
	// which the idle memory is also measured on the way up (the sweep;
	// Subscribers is always its last point). Default none.
	MemoryPoints []int
	// Warmup subscribers connect, get their ticks and leave before the
	// idle memory baseline is taken, so that the one-off cost of the first
	// connections is not spread over the subscribers (memory.go). Default
	// DefaultWarmup, at most half the sweep's first point; NoWarmup for
	// none. Must be below the first point.
	Warmup int
	// Duration is the steady measurement window of each mode. Default
	// 30s, at least 3s.
	Duration time.Duration
	// Intervals is IntervalsOne (default) or IntervalsSpread. Spread
	// intervals need a Duration of a minute or more for every subscriber
	// to have ticks in the window.
	Intervals Intervals
	// Modes to measure, in this order. Default AllModes(); the ratios and
	// targets need all three.
	Modes []Mode
	// Sources is how many loopback source addresses, 127.0.0.1 upwards,
	// the subscribers are spread over. Default 16, at most 254.
	Sources int
	// ConnectRate paces the subscribers' connections, per second. Default
	// 2000: the edge keeps a connection's phase unless more than 128 land
	// in one 10 ms slot of one shard, far above this.
	ConnectRate int
	// Settle is the wait after every subscriber connected before the idle
	// memory is measured (and after that, before the window). Default 3s.
	Settle time.Duration
	// ClientPoll, when positive, makes the client poll its sockets every
	// ClientPoll instead of blocking in epoll_wait, so that no server write
	// wakes a client thread; tick-to-wire then includes up to ClientPoll.
	// Default 0: block (exact receipt times).
	ClientPoll time.Duration
	// Slow is how many of the Subscribers (spread evenly) are slow: they
	// stall for SlowStall, then read everything, and so on, with the
	// smallest receive buffer; the servers' sockets then get the smallest
	// send buffer, all of them, in every mode. Their Snapshots are counted
	// apart, the server's conflations and drops show what it did. Default
	// 0.
	Slow int
	// SlowStall is how long a slow subscriber does not read. Default 12s:
	// the smallest buffers take about eight 200-byte Snapshots, and the
	// edge's 10 s write timeout counts from the first write that did not
	// fit, so the edge conflates for about four seconds per stall and
	// closes none.
	SlowStall time.Duration
	// Rounds runs the modes this many times, interleaved (edge, naive,
	// raw, edge, …), and reports for each mode the round with the median
	// CPU per delivery, listing every round's key figures beside it. On a
	// shared VM whose neighbours steal CPU in bursts this keeps one
	// disturbed window from deciding a ratio. Default 1.
	Rounds int
	// Network is where each mode's server and client talk. Default
	// NetworkAuto.
	Network Network
	// IdleWindow measures the server's CPU and allocation rate before any
	// subscriber connects (NATS, the stub, timers). Default 2s.
	IdleWindow time.Duration
	// Seed draws the spread intervals. Default 1.
	Seed uint64
	// Child returns an unstarted command for a child process, which must
	// run RunChild on its stdin and stdout (`meridian bench child` does).
	// Required.
	Child func() *exec.Cmd
	// ChildStderr also receives the children's stderr. Default: only the
	// last 16 KiB are kept, for error messages.
	ChildStderr io.Writer
	// Logger receives progress. Default: discarded.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Subscribers == 0 {
		c.Subscribers = DefaultSubscribers
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Intervals == "" {
		c.Intervals = IntervalsOne
	}
	if len(c.Modes) == 0 {
		c.Modes = AllModes()
	}
	if c.Sources == 0 {
		c.Sources = DefaultSources
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = DefaultConnectRate
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.IdleWindow == 0 {
		c.IdleWindow = DefaultIdleWindow
	}
	if c.Network == "" {
		c.Network = NetworkAuto
	}
	if c.SlowStall == 0 {
		c.SlowStall = DefaultSlowStall
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.Warmup == 0 {
		c.Warmup = min(DefaultWarmup, c.points()[0]/2)
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// points is the sweep: MemoryPoints, then Subscribers.
func (c Config) points() []int {
	return append(slices.Clone(c.MemoryPoints), c.Subscribers)
}

// MaxSubscribers is the most subscribers this process's file limit allows.
func MaxSubscribers() (int, error) {
	hard, err := hardFileLimit()
	if err != nil {
		return 0, err
	}
	return int(min(hard, 1<<30)) - fileReserve, nil
}

// allowSubscribers raises the hard file limit, which the children inherit,
// to what n subscribers need, where this process may (root); elsewhere
// validate reports the limit.
func allowSubscribers(n int) {
	if limit, err := MaxSubscribers(); err == nil && n > limit {
		_ = raiseHardFileLimit(uint64(n + fileReserve))
	}
}

func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	limit, err := MaxSubscribers()
	if err != nil {
		return err
	}
	switch {
	case c.Child == nil:
		return bad("Child is required")
	case c.Subscribers < 1 || c.Subscribers > limit:
		return bad("subscribers %d: want 1 to %d (the file limit %d minus %d)", c.Subscribers, limit, limit+fileReserve, fileReserve)
	case c.Duration < MinDuration:
		return bad("duration %s: want at least %s", c.Duration, MinDuration)
	case c.Sources < 1 || c.Sources > 254:
		return bad("sources %d: want 1 to 254", c.Sources)
	case c.ConnectRate < 1:
		return bad("connect rate %d: want at least 1 per second", c.ConnectRate)
	case c.Settle < 0 || c.IdleWindow < 0 || c.ClientPoll < 0:
		return bad("settle, idle window and client poll must not be negative")
	case c.ClientPoll > time.Second:
		return bad("client poll %s: want at most 1s", c.ClientPoll)
	case c.Slow < 0 || c.Slow >= c.Subscribers:
		return bad("slow subscribers %d: want 0 to %d (fewer than subscribers)", c.Slow, c.Subscribers-1)
	case c.Rounds < 1 || c.Rounds > 9:
		return bad("rounds %d: want 1 to 9", c.Rounds)
	case c.SlowStall < 0:
		return bad("slow stall %s: want a positive duration", c.SlowStall)
	case c.Warmup < NoWarmup:
		return bad("warm-up %d: want 0 or more subscribers, or %d for none", c.Warmup, NoWarmup)
	}
	pts := c.points()
	for i, p := range pts {
		if i > 0 && p <= pts[i-1] {
			return bad("memory points %v: want ascending counts below subscribers %d", c.MemoryPoints, c.Subscribers)
		}
		if p < 1 {
			return bad("memory point %d: want at least 1", p)
		}
	}
	if c.Warmup >= pts[0] {
		return bad("warm-up %d: want fewer than the first point, %d subscribers", c.Warmup, pts[0])
	}
	if _, err := ParseIntervals(string(c.Intervals)); err != nil {
		return bad("%v", err)
	}
	if _, err := ParseNetwork(string(c.Network)); err != nil {
		return bad("%v", err)
	}
	seen := map[Mode]bool{}
	for _, m := range c.Modes {
		if _, err := ParseMode(string(m)); err != nil {
			return bad("%v", err)
		}
		if seen[m] {
			return bad("mode %s listed twice", m)
		}
		seen[m] = true
	}
	return nil
}

// Run measures each mode in turn and returns the report. Every child
// process it starts is stopped before it returns, on every path.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	allowSubscribers(cfg.Subscribers)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &Report{
		Subscribers: cfg.Subscribers, Intervals: cfg.Intervals,
		DurationSeconds: cfg.Duration.Seconds(), Cores: runtime.NumCPU(),
		ClientPollSeconds: cfg.ClientPoll.Seconds(),
		Slow:              cfg.Slow, SlowStallSeconds: cfg.SlowStall.Seconds(), Rounds: cfg.Rounds,
	}
	var err error
	if rep.Network, rep.NetworkNote, err = resolveNetwork(cfg.Network); err != nil {
		return nil, err
	}
	if rep.NetworkNote != "" {
		cfg.Logger.Warn("measuring on the host's loopback", "why", rep.NetworkNote)
	}
	cfg.Network = rep.Network
	rounds := make(map[Mode][]*ModeResult)
	for round := range cfg.Rounds {
		for _, m := range cfg.Modes {
			res, err := runMode(ctx, cfg, m)
			if err != nil {
				if cfg.Rounds > 1 {
					return nil, fmt.Errorf("measure %s, round %d: %w", m, round+1, err)
				}
				return nil, fmt.Errorf("measure %s: %w", m, err)
			}
			rounds[m] = append(rounds[m], res)
		}
	}
	for _, m := range cfg.Modes {
		rep.set(m, medianRound(rounds[m]))
	}
	rep.evaluate()
	return rep, nil
}

// resolveNetwork decides what NetworkAuto means here by trying to create a
// namespace; note says why the host's loopback is used instead, if so.
func resolveNetwork(want Network) (got Network, note string, err error) {
	if want == NetworkHost {
		return NetworkHost, "", nil
	}
	ns, err := newNetns()
	if err != nil {
		if want == NetworkNamespace {
			return "", "", err
		}
		return NetworkHost, err.Error(), nil
	}
	ns.close()
	return NetworkNamespace, "", nil
}

// Timeouts of the harness's conversations with its children.
const (
	readyTimeout  = 30 * time.Second
	sampleTimeout = 30 * time.Second
	markTimeout   = 10 * time.Second
	reportTimeout = 60 * time.Second
	settleTimeout = 30 * time.Second
)

// runMode measures one mode: server up, idle figures, subscribers in,
// idle memory, then the steady window.
func runMode(ctx context.Context, cfg Config, mode Mode) (res *ModeResult, err error) {
	log := cfg.Logger.With("mode", mode)
	start := (*exec.Cmd).Start
	if cfg.Network == NetworkNamespace {
		ns, err := newNetns()
		if err != nil {
			return nil, err
		}
		defer ns.close()
		start = ns.start
	}
	sspec := &serverSpec{Mode: mode}
	if cfg.Slow > 0 {
		sspec.SendBuffer = slowSendBuffer
	}
	srv, err := startChild(string(mode)+" server", cfg.Child, start, cfg.ChildStderr,
		childSpec{Role: roleServer, Server: sspec})
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	ready, err := srv.recv(ctx, evReady, readyTimeout)
	if err != nil {
		return nil, err
	}
	sample := func(gc bool) (serverSample, error) {
		m, err := srv.call(ctx, command{Cmd: cmdSample, GC: gc}, evSample, sampleTimeout)
		if err != nil {
			return serverSample{}, err
		}
		if m.Sample == nil {
			return serverSample{}, srv.failed("sample reply without a sample")
		}
		return *m.Sample, nil
	}

	// Before any subscriber: memory, and the fixed CPU and allocation rate.
	before, err := sample(true)
	if err != nil {
		return nil, err
	}
	idle0, err := sample(false)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, cfg.IdleWindow); err != nil {
		return nil, err
	}
	idle1, err := sample(false)
	if err != nil {
		return nil, err
	}
	log.Info("server ready", "addr", ready.Addr, "rss_bytes", before.RSSBytes)

	cl, err := startChild(string(mode)+" client", cfg.Child, start, cfg.ChildStderr, childSpec{Role: roleClient, Client: &clientSpec{
		Addr: ready.Addr, Subscribers: cfg.Subscribers, Intervals: cfg.Intervals,
		Sources: cfg.Sources, ConnectRate: cfg.ConnectRate, Seed: cfg.Seed, Poll: cfg.ClientPoll,
		Slow: cfg.Slow, SlowStall: cfg.SlowStall,
	}})
	if err != nil {
		return nil, err
	}
	// The client goes first: its sockets reset, the server has none left
	// to close gracefully.
	defer cl.stop()
	// settled waits until the server holds n connections, then Settle.
	settled := func(n int) error {
		deadline := time.Now().Add(settleTimeout)
		for {
			s, err := sample(false)
			if err != nil {
				return err
			}
			if s.Connections == int64(n) {
				break
			}
			if time.Now().After(deadline) {
				return srv.failed(fmt.Sprintf("holds %d connections %s after the client connected %d", s.Connections, settleTimeout, n))
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
		return sleep(ctx, cfg.Settle)
	}
	connectTimeout := func(n int) time.Duration {
		return time.Duration(n/cfg.ConnectRate)*time.Second + 60*time.Second
	}
	warm, warmups := before, 0
	if cfg.Warmup > 0 {
		m, err := cl.call(ctx, command{Cmd: cmdWarmup, Subscribers: cfg.Warmup}, evWarmedUp, connectTimeout(cfg.Warmup))
		if err != nil {
			return nil, err
		}
		if m.Connected == nil || m.Connected.Connected != cfg.Warmup {
			return nil, cl.failed(fmt.Sprintf("warm-up reply %+v, want %d connected", m.Connected, cfg.Warmup))
		}
		if err := settled(0); err != nil {
			return nil, err
		}
		if warm, err = sample(true); err != nil {
			return nil, err
		}
		warmups = cfg.Warmup
		log.Info("warmed up", "subscribers", warmups, "fixed_rss_bytes", int64(warm.RSSBytes)-int64(before.RSSBytes))
	}
	var conn *connectSummary
	var points []serverSample
	for _, n := range cfg.points() {
		m, err := cl.call(ctx, command{Cmd: cmdConnect, Subscribers: n}, evConnected, connectTimeout(n))
		if err != nil {
			return nil, err
		}
		conn = m.Connected
		if conn == nil {
			return nil, cl.failed("connected reply without figures")
		}
		if conn.Failed > 0 || conn.Connected != n {
			return nil, cl.failed(fmt.Sprintf("%d of %d subscribers failed to connect; first error: %s", conn.Failed, n, conn.FirstError))
		}
		log.Info("subscribers connected", "n", conn.Connected, "seconds", conn.Seconds)
		if err := settled(n); err != nil {
			return nil, err
		}
		// As it runs first, then after a forced collection and scavenge.
		held, err := sample(false)
		if err != nil {
			return nil, err
		}
		s, err := sample(true)
		if err != nil {
			return nil, err
		}
		s.HeldRSSBytes = held.RSSBytes
		points = append(points, s)
	}
	after := points[len(points)-1]
	// Let deliveries recover from the collection's pause before measuring.
	if err := sleep(ctx, min(cfg.Settle, time.Second)); err != nil {
		return nil, err
	}

	// The steady window.
	busy0, err := readMachineCPU()
	if err != nil {
		return nil, err
	}
	if _, err := cl.call(ctx, command{Cmd: cmdMark}, evMarked, markTimeout); err != nil {
		return nil, err
	}
	s0, err := sample(false)
	if err != nil {
		return nil, err
	}
	log.Info("measuring", "window", cfg.Duration)
	if err := sleep(ctx, cfg.Duration); err != nil {
		return nil, err
	}
	s1, err := sample(false)
	if err != nil {
		return nil, err
	}
	busy1, err := readMachineCPU()
	if err != nil {
		return nil, err
	}
	m, err := cl.call(ctx, command{Cmd: cmdReport}, evReport, reportTimeout)
	if err != nil {
		return nil, err
	}
	if m.Report == nil {
		return nil, cl.failed("report reply without a report")
	}
	res = compute(mode, measurements{
		before: before, idle0: idle0, idle1: idle1, after: after, s0: s0, s1: s1,
		warm: warm, points: points, warmups: warmups,
		conn: *conn, client: *m.Report, machine: busy1.sub(busy0),
	})
	log.Info("measured", "cpu_us_per_delivery", res.CPUMicrosPerDelivery,
		"bytes_per_idle_subscriber", res.BytesPerIdleSubscriber,
		"tick_to_wire_p99_ms", res.TickToWireP99Ms, "made", res.DeliveriesMade, "due", res.DeliveriesDue)
	return res, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
