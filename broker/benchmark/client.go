//go:build linux

package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// The client child: N subscribers on plain non-blocking sockets, outside
// Go's netpoller, read by one epoll loop per core. Dialing is blocking
// (connect, upgrade, first Snapshot, subscription) in a few dialer
// goroutines, paced at ConnectRate; each socket then goes to a reader.

const (
	// markLead puts the window start a little after the mark command, so
	// that every reader sees it before any tick it covers can arrive.
	markLead = 100 * time.Millisecond
	// earlyTolerance: a Snapshot up to this much before its tick counts
	// for that tick (the edge rounds ticks to 10 ms slots, ±5 ms).
	earlyTolerance = 50 * time.Millisecond
	// handshakeTimeout bounds connect, upgrade and the first Snapshot.
	handshakeTimeout = 10 * time.Second
	dialAttempts     = 3
	maxDialers       = 64
	// wsKey is a valid Sec-WebSocket-Key; servers only check its form.
	wsKey = "dGhlIHNhbXBsZSBub25jZQ=="
)

type client struct {
	spec      clientSpec
	server    unix.SockaddrInet4
	request   []byte
	intervals []int // seconds, per subscriber
	base      time.Time
	w0        atomic.Int64 // window start, mono ns; MaxInt64 until marked
	readers   []*reader
	staller   *staller // nil without slow subscribers
	stop      chan struct{}
	wg        sync.WaitGroup
}

func runClient(ctx context.Context, spec clientSpec, lines *bufio.Scanner, enc *json.Encoder) error {
	if spec.Subscribers < 1 || spec.Sources < 1 || spec.Sources > 254 || spec.ConnectRate < 1 ||
		spec.Slow < 0 || spec.Slow >= spec.Subscribers || (spec.Slow > 0 && spec.SlowStall <= 0) {
		return fmt.Errorf("client spec %+v: %w", spec, errBadSpec)
	}
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	cl, err := newClient(spec)
	if err != nil {
		return err
	}
	defer cl.close()
	var cpu0 time.Duration
	marked := false
	var all connectTally
	for {
		cmd, ok, err := nextCommand(lines)
		if err != nil || !ok {
			return err
		}
		switch cmd.Cmd {
		case cmdWarmup:
			if cmd.Subscribers < 1 || cmd.Subscribers > spec.Subscribers || all.connected() > 0 || marked {
				return fmt.Errorf("warm up %d subscribers after %d connected: %w", cmd.Subscribers, all.connected(), errBadSpec)
			}
			var sum connectSummary
			if sum, err = cl.warmup(ctx, cmd.Subscribers); err != nil {
				return err
			}
			err = enc.Encode(message{Event: evWarmedUp, Connected: &sum})
		case cmdConnect:
			from := all.connected() + all.failed
			if cmd.Subscribers <= from || cmd.Subscribers > spec.Subscribers || marked {
				return fmt.Errorf("connect up to %d subscribers with %d tried: %w", cmd.Subscribers, from, errBadSpec)
			}
			all.add(cl.connect(ctx, from, cmd.Subscribers, cl.keep))
			sum := all.summary()
			err = enc.Encode(message{Event: evConnected, Connected: &sum})
		case cmdMark:
			marked, cpu0 = true, processCPU()
			cl.w0.Store(cl.mono() + int64(markLead))
			err = enc.Encode(message{Event: evMarked})
		case cmdReport:
			if !marked {
				return fmt.Errorf("report before mark: %w", errBadSpec)
			}
			rep := cl.report(cl.mono() - int64(reportGrace))
			rep.CPUSeconds = (processCPU() - cpu0).Seconds()
			err = enc.Encode(message{Event: evReport, Report: &rep})
		default:
			return fmt.Errorf("client command %q: %w", cmd.Cmd, errBadSpec)
		}
		if err != nil {
			return fmt.Errorf("reply to %s: %w", cmd.Cmd, err)
		}
	}
}

func newClient(spec clientSpec) (*client, error) {
	ap, err := net.ResolveTCPAddr("tcp4", spec.Addr)
	if err != nil || ap.IP.To4() == nil {
		return nil, fmt.Errorf("client server address %q: want IPv4 host:port: %w", spec.Addr, errBadSpec)
	}
	cl := &client{
		spec:    spec,
		server:  unix.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ap.IP.To4())},
		request: []byte("GET /ws/metrics HTTP/1.1\r\nHost: " + spec.Addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n"),
		base:    time.Now(),
		stop:    make(chan struct{}),
	}
	cl.w0.Store(math.MaxInt64)
	rng := rand.New(rand.NewPCG(spec.Seed, 0x6d65726964696e))
	cl.intervals = make([]int, spec.Subscribers)
	for i := range cl.intervals {
		cl.intervals[i] = 1
		if spec.Intervals == IntervalsSpread {
			cl.intervals[i] = 1 + rng.IntN(60)
		}
	}
	for range runtime.GOMAXPROCS(0) {
		r, err := newReader(cl)
		if err != nil {
			cl.close()
			return nil, err
		}
		cl.readers = append(cl.readers, r)
	}
	for _, r := range cl.readers {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			r.run(cl.stop)
		}()
	}
	if spec.Slow > 0 {
		cl.staller = newStaller(cl, spec.SlowStall)
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			cl.staller.run(cl.stop)
		}()
	}
	return cl, nil
}

func (cl *client) mono() int64 { return int64(time.Since(cl.base)) }

// wall is the wall-clock time of a mono reading.
func (cl *client) wall(mono int64) time.Time { return cl.base.Add(time.Duration(mono)) }

// close stops the readers and resets every connection (SO_LINGER 0: no
// TIME_WAIT left behind for the next mode's thousands of connections).
func (cl *client) close() {
	close(cl.stop)
	cl.wg.Wait()
	for _, r := range cl.readers {
		r.close()
	}
	if cl.staller != nil {
		cl.staller.close()
	}
}

// connectTally accumulates connect results.
type connectTally struct {
	failed   int
	firstErr error
	t0Errors []int64
	seconds  float64
}

func (t *connectTally) connected() int { return len(t.t0Errors) }

func (t *connectTally) add(o connectTally) {
	t.failed += o.failed
	if t.firstErr == nil {
		t.firstErr = o.firstErr
	}
	t.t0Errors = append(t.t0Errors, o.t0Errors...)
	t.seconds += o.seconds
}

func (t *connectTally) summary() connectSummary {
	sum := connectSummary{Connected: t.connected(), Failed: t.failed, Seconds: t.seconds, T0Error: distOf(t.t0Errors)}
	if t.firstErr != nil {
		sum.FirstError = t.firstErr.Error()
	}
	return sum
}

// warmupHold is how long the warm-up's subscribers stay connected once all
// are: long enough for each to get a tick after its first Snapshot.
const warmupHold = 1500 * time.Millisecond

// warmup connects n subscribers (the first n of the spec's, paced as
// usual), holds them for warmupHold without reading, and resets them all,
// so that the server runs every path an idle subscriber takes before its
// memory is measured.
func (cl *client) warmup(ctx context.Context, n int) (connectSummary, error) {
	var mu sync.Mutex
	var fds []int
	t := cl.connect(ctx, 0, n, func(i int, c *subConn) {
		mu.Lock()
		fds = append(fds, c.fd)
		mu.Unlock()
	})
	defer func() {
		for _, fd := range fds {
			unix.Close(fd) // SO_LINGER 0: a reset, no TIME_WAIT
		}
	}()
	if t.failed > 0 {
		return connectSummary{}, fmt.Errorf("warm up: %d of %d subscribers failed to connect; first error: %v", t.failed, n, t.firstErr)
	}
	return t.summary(), sleep(ctx, warmupHold)
}

// keep hands subscriber i to its reader (or the staller).
func (cl *client) keep(i int, c *subConn) {
	if cl.spec.isSlow(i) {
		if !cl.staller.hand(c, cl.stop) {
			unix.Close(c.fd)
		}
		return
	}
	if !cl.readers[i%len(cl.readers)].hand(c, cl.stop) {
		unix.Close(c.fd)
	}
}

// connect dials subscribers from to to-1, paced at ConnectRate, and hands
// each connected one to take.
func (cl *client) connect(ctx context.Context, from, to int, take func(int, *subConn)) connectTally {
	n := to - from
	dialers := min(maxDialers, n)
	start := time.Now()
	gap := time.Second / time.Duration(cl.spec.ConnectRate)
	results := make([]connectTally, dialers)
	var wg sync.WaitGroup
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[d]
			timer := time.NewTimer(0)
			defer timer.Stop()
			<-timer.C
			for k := d; k < n; k += dialers {
				timer.Reset(time.Until(start.Add(time.Duration(k) * gap)))
				select {
				case <-ctx.Done():
					res.failed += (n - k + dialers - 1) / dialers // this one and the rest
					if res.firstErr == nil {
						res.firstErr = ctx.Err()
					}
					return
				case <-timer.C:
				}
				i := from + k
				c, err := cl.dialRetry(ctx, i)
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.t0Errors = append(res.t0Errors, c.t0Error)
				take(i, c)
			}
		}()
	}
	wg.Wait()
	var t connectTally
	for _, r := range results {
		t.add(r)
	}
	t.seconds = time.Since(start).Seconds()
	return t
}

func (cl *client) dialRetry(ctx context.Context, i int) (*subConn, error) {
	var err error
	for attempt := range dialAttempts {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		var c *subConn
		if c, err = cl.dial(i); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("subscriber %d: %w", i, err)
}

// dial connects subscriber i from 127.0.0.(1 + i mod Sources), upgrades,
// waits for the first Snapshot (its receipt is t0), sends the subscription
// and returns the socket non-blocking.
func (cl *client) dial(i int) (c *subConn, err error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	// Bind the source address but let connect pick the port, so that ports
	// are unique per 4-tuple rather than per address.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	src := [4]byte{127, 0, 0, byte(1 + i%cl.spec.Sources)}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
		return nil, fmt.Errorf("bind %v: %w", net.IP(src[:]), err)
	}
	if cl.spec.isSlow(i) {
		// Before connect, which fixes the window scale: the kernel's
		// minimum, so that a stall fills it within seconds.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1); err != nil {
			return nil, fmt.Errorf("set receive buffer: %w", err)
		}
	}
	tv := unix.NsecToTimeval(int64(handshakeTimeout))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &cl.server); err != nil {
		return nil, fmt.Errorf("connect from %v: %w", net.IP(src[:]), err)
	}
	sent := cl.mono()
	if err := writeAll(fd, cl.request); err != nil {
		return nil, fmt.Errorf("send upgrade request: %w", err)
	}
	buf := make([]byte, 0, 4096)
	head := -1
	for {
		if len(buf) == cap(buf) {
			return nil, errors.New("upgrade response too large")
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return nil, fmt.Errorf("read upgrade response (%d bytes so far): %w", len(buf), errOrEOF(err))
		}
		buf = buf[:len(buf)+n]
		if head < 0 {
			if head = bytes.Index(buf, []byte("\r\n\r\n")); head < 0 {
				continue
			}
			head += 4
			if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
				line, _, _ := bytes.Cut(buf, []byte("\r\n"))
				return nil, fmt.Errorf("upgrade refused: %q", line)
			}
		}
		var first []byte
		var firstOp ws.OpCode
		used, err := parseFrames(buf[head:], func(op ws.OpCode, p []byte) bool {
			first, firstOp = p, op
			return false
		})
		if err != nil {
			return nil, fmt.Errorf("read first snapshot: %w", err)
		}
		if first == nil {
			continue
		}
		received := cl.mono()
		if firstOp != ws.OpText || eventKindOf(first) != kindSnapshot {
			return nil, fmt.Errorf("first message is not a Snapshot: %s %q", opName(firstOp), first)
		}
		interval := cl.intervals[i]
		sub := fmt.Appendf(nil, `{"metrics":[],"interval_seconds":%d,"include_history":false}`, interval)
		var mask [4]byte
		binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
		if err := writeAll(fd, clientFrame(ws.OpText, sub, mask)); err != nil {
			return nil, fmt.Errorf("send subscription: %w", err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("set non-blocking: %w", err)
		}
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		c := &subConn{id: int32(i), fd: fd, interval: int64(interval) * int64(time.Second), t0: received, t0Error: received - sent}
		if rest := buf[head+used:]; len(rest) > 0 {
			c.partial = append([]byte(nil), rest...)
		}
		return c, nil
	}
}

func errOrEOF(err error) error {
	if err == nil {
		return errors.New("connection closed")
	}
	if err == unix.EAGAIN {
		return fmt.Errorf("no answer within %s", handshakeTimeout)
	}
	return err
}

// writeAll writes b to a blocking socket.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return errOrEOF(err)
		}
		b = b[n:]
	}
	return nil
}

// report collects the readers' accounts of the ticks in [w0, end].
func (cl *client) report(end int64) clientReport {
	w0 := cl.w0.Load()
	rep := clientReport{WindowSeconds: time.Duration(end - w0).Seconds()}
	var lags, ages []int64
	worstLag := int64(math.MinInt64)
	for _, r := range cl.readers {
		rr := r.ask(end, cl.stop)
		rep.tally.add(rr.tally)
		rep.Due += rr.due
		if rr.worst != "" && rr.worstLag > worstLag {
			worstLag, rep.Worst = rr.worstLag, rr.worst
		}
		if rep.Short == "" {
			rep.Short = rr.short
		}
		for _, s := range rr.samples {
			lags = append(lags, s.lag)
			if s.hasAge {
				ages = append(ages, s.age)
			}
		}
	}
	rep.Made = uint64(len(lags))
	rep.Lag = distOf(lags)
	rep.Age = distOf(ages)
	if cl.staller != nil {
		var problem string
		rep.SlowSnapshots, rep.SlowClosed, problem = cl.staller.tally()
		if problem != "" {
			rep.tally.note("slow subscriber: %s", problem)
		}
	}
	return rep
}
