package benchmark

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The harness and its children speak JSON lines: the child reads a
// childSpec as its first stdin line and then commands; it writes messages
// to stdout, one per line — first "ready" (server), then one reply per
// command. Logs go to stderr.

// Mode is what serves the subscribers in a run.
type Mode string

const (
	// ModeEdge is the real edge.Edge.
	ModeEdge Mode = "edge"
	// ModeNaive is the baseline: naiveedge.
	ModeNaive Mode = "naive"
	// ModeRaw is the raw write loop, the machine's ceiling.
	ModeRaw Mode = "raw"
)

// AllModes lists the modes in the order Run measures them by default.
func AllModes() []Mode { return []Mode{ModeEdge, ModeNaive, ModeRaw} }

// ParseMode resolves a mode name.
func ParseMode(s string) (Mode, error) {
	for _, m := range AllModes() {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown mode %q: want edge, naive or raw", s)
}

// Intervals says which subscription intervals the subscribers use.
type Intervals string

const (
	// IntervalsOne puts every subscriber at 1 s.
	IntervalsOne Intervals = "1s"
	// IntervalsSpread draws each subscriber's interval uniformly from 1 to
	// 60 s (deterministically from Config.Seed).
	IntervalsSpread Intervals = "spread"
)

// ParseIntervals resolves an intervals name.
func ParseIntervals(s string) (Intervals, error) {
	switch Intervals(s) {
	case IntervalsOne, IntervalsSpread:
		return Intervals(s), nil
	}
	return "", fmt.Errorf("unknown intervals %q: want 1s or spread", s)
}

// Network is where a mode's server and client processes talk.
type Network string

const (
	// NetworkAuto is NetworkNamespace where this process may create one
	// (root), NetworkHost elsewhere.
	NetworkAuto Network = "auto"
	// NetworkNamespace runs each mode's processes in a fresh network
	// namespace of their own: a loopback without the host's firewall and
	// connection-tracking rules (Docker installs both) and without earlier
	// modes' sockets.
	NetworkNamespace Network = "namespace"
	// NetworkHost uses the host's loopback.
	NetworkHost Network = "host"
)

// ParseNetwork resolves a network name.
func ParseNetwork(s string) (Network, error) {
	switch Network(s) {
	case NetworkAuto, NetworkNamespace, NetworkHost:
		return Network(s), nil
	}
	return "", fmt.Errorf("unknown network %q: want auto, namespace or host", s)
}

// childSpec is a child's first stdin line.
type childSpec struct {
	Role   string      `json:"role"` // roleServer or roleClient
	Server *serverSpec `json:"server,omitempty"`
	Client *clientSpec `json:"client,omitempty"`
}

const (
	roleServer = "server"
	roleClient = "client"
)

type serverSpec struct {
	Mode Mode `json:"mode"`
	// SendBuffer, when positive, is SO_SNDBUF for every accepted socket
	// (the kernel doubles it and clamps it to its minimum).
	SendBuffer int `json:"send_buffer,omitempty"`
}

type clientSpec struct {
	Addr        string    `json:"addr"`        // host:port of the server
	Subscribers int       `json:"subscribers"` // the most cmdConnect asks for
	Intervals   Intervals `json:"intervals"`
	Sources     int       `json:"sources"`
	ConnectRate int       `json:"connect_rate"` // connections per second
	Seed        uint64    `json:"seed"`
	// Poll, when positive, makes the readers poll every Poll instead of
	// blocking in epoll_wait: a server's write then never has to wake a
	// client thread on another core (a cross-CPU wake-up, costly in a VM),
	// which is closer to a server writing to remote clients; receipt times
	// are then late by up to Poll.
	Poll time.Duration `json:"poll_ns,omitempty"`
	// Slow of the subscribers (spread evenly) read with a tiny receive
	// buffer and only every SlowStall; see staller.
	Slow      int           `json:"slow,omitempty"`
	SlowStall time.Duration `json:"slow_stall_ns,omitempty"`
}

// isSlow says whether subscriber i is one of the spec's Slow ones: the last
// of every Subscribers/Slow.
func (s *clientSpec) isSlow(i int) bool {
	if s.Slow <= 0 {
		return false
	}
	stride := s.Subscribers / s.Slow
	return i%stride == stride-1 && i/stride < s.Slow
}

// command is a later stdin line.
type command struct {
	Cmd string `json:"cmd"`          // cmdSample (server); cmdWarmup, cmdConnect, cmdMark or cmdReport (client)
	GC  bool   `json:"gc,omitempty"` // sample: collect and return memory to the OS first
	// Subscribers: for cmdWarmup how many connect and leave, for
	// cmdConnect how many are to be connected in all.
	Subscribers int `json:"subscribers,omitempty"`
}

const (
	cmdSample  = "sample"
	cmdWarmup  = "warmup"
	cmdConnect = "connect"
	cmdMark    = "mark"
	cmdReport  = "report"
)

// message is a stdout line.
type message struct {
	Event     string          `json:"event"` // see the ev constants
	Error     string          `json:"error,omitempty"`
	Addr      string          `json:"addr,omitempty"`
	Sample    *serverSample   `json:"sample,omitempty"`
	Connected *connectSummary `json:"connected,omitempty"`
	Report    *clientReport   `json:"report,omitempty"`
}

const (
	evReady     = "ready"
	evSample    = "sample"
	evConnected = "connected"
	evWarmedUp  = "warmed_up"
	evMarked    = "marked"
	evReport    = "report"
	evError     = "error"
)

// errBadSpec is a child spec or command the child cannot act on.
var errBadSpec = errors.New("bad child spec")

// maxLine bounds a protocol line (a client report with its figures is a
// few hundred bytes; specs are smaller).
const maxLine = 1 << 20

// RunChild is the body of the benchmark's child processes: it reads its
// spec and commands from in, writes JSON lines to out, and returns when in
// reaches EOF (the harness is done or gone) or ctx ends. A failure is also
// reported to the harness as an "error" line.
func RunChild(ctx context.Context, in io.Reader, out io.Writer) error {
	if c, ok := in.(io.Closer); ok {
		// Unblocks the line reader when ctx ends (os.Stdin is a pipe here).
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
	}
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 0, 4096), maxLine)
	enc := json.NewEncoder(out)
	err := runChild(ctx, lines, enc)
	if err != nil {
		_ = enc.Encode(message{Event: evError, Error: err.Error()})
	}
	return err
}

func runChild(ctx context.Context, lines *bufio.Scanner, enc *json.Encoder) error {
	if !lines.Scan() {
		if err := lines.Err(); err != nil {
			return fmt.Errorf("read child spec: %w", err)
		}
		return fmt.Errorf("read child spec: %w", io.ErrUnexpectedEOF)
	}
	var spec childSpec
	if err := json.Unmarshal(lines.Bytes(), &spec); err != nil {
		return fmt.Errorf("decode child spec: %v: %w", err, errBadSpec)
	}
	switch {
	case spec.Role == roleServer && spec.Server != nil:
		return runServer(ctx, *spec.Server, lines, enc)
	case spec.Role == roleClient && spec.Client != nil:
		return runClient(ctx, *spec.Client, lines, enc)
	}
	return fmt.Errorf("child role %q without its settings: %w", spec.Role, errBadSpec)
}

// nextCommand reads one command; ok is false at EOF.
func nextCommand(lines *bufio.Scanner) (command, bool, error) {
	if !lines.Scan() {
		return command{}, false, nil
	}
	var cmd command
	if err := json.Unmarshal(lines.Bytes(), &cmd); err != nil {
		return cmd, false, fmt.Errorf("decode command %q: %v: %w", lines.Text(), err, errBadSpec)
	}
	return cmd, true, nil
}

// counters are a subject's cumulative figures.
type counters struct {
	Connections int64  `json:"connections"`
	Deliveries  uint64 `json:"deliveries"` // Snapshot frames written
	// Conflations: the edge's replaced unsent snapshots; the baseline's
	// ticks dropped by its time.Ticker. Always 0 for raw.
	Conflations uint64 `json:"conflations"`
	// Dropped: connections the server gave up on (edge: slow consumer
	// disconnects; baseline: write errors; raw: short or failed writes).
	Dropped uint64 `json:"dropped"`
	// TickLag is the edge's own tick_lag_seconds histogram.
	TickLag *histData `json:"tick_lag,omitempty"`
}

// serverSample is what the server child reports about itself.
type serverSample struct {
	WallNanos int64  `json:"wall_ns"`    // Unix ns
	CPUNanos  int64  `json:"cpu_ns"`     // user + system
	SysNanos  int64  `json:"sys_cpu_ns"` // system (kernel) part
	RSSBytes  uint64 `json:"rss_bytes"`
	// RSSFileBytes is the part of RSSBytes backed by the binary's file
	// (code pages first run while subscribers connect): a one-off cost.
	RSSFileBytes uint64 `json:"rss_file_bytes"`
	// RSSAnonBytes is the anonymous part: the Go runtime's memory.
	RSSAnonBytes uint64 `json:"rss_anon_bytes"`
	// HeldRSSBytes is set by the harness on a sweep point: VmRSS just
	// before the collection, as the server held it running on its own.
	HeldRSSBytes uint64 `json:"held_rss_bytes,omitempty"`
	// Mem is the runtime's own account of that memory, by class.
	Mem        memClasses `json:"mem"`
	HeapBytes  uint64     `json:"heap_bytes"`  // HeapAlloc: live objects
	HeapInuse  uint64     `json:"heap_inuse"`  // HeapInuse: spans holding them (fragmentation included)
	StackBytes uint64     `json:"stack_bytes"` // StackInuse
	// RuntimeBytes is the runtime's own memory in use: span and cache
	// structures, GC metadata, profiling buckets and the rest (OtherSys,
	// which holds netpoll descriptors among others).
	RuntimeBytes uint64 `json:"runtime_bytes"`
	Mallocs      uint64 `json:"mallocs"`
	NumGC        uint32 `json:"num_gc"`
	Goroutines   int    `json:"goroutines"`
	CollectedGC  bool   `json:"collected_gc"`
	counters
}

// connectSummary is the client's report once every subscriber is connected.
type connectSummary struct {
	Connected  int     `json:"connected"`
	Failed     int     `json:"failed"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	// T0Error bounds, per subscriber, how late the client's t0 may be:
	// from sending the upgrade request to receiving the first Snapshot.
	T0Error dist `json:"t0_error"`
}

// clientReport is the client's account of the window.
type clientReport struct {
	WindowSeconds float64 `json:"window_seconds"` // ticks counted: mark to report minus the grace
	CPUSeconds    float64 `json:"cpu_seconds"`    // the client's own CPU over mark to report
	tally
	Due  uint64 `json:"due"`
	Made uint64 `json:"made"`
	// Lag is receipt minus scheduled tick; Age is receipt minus the
	// snapshot's timestamp.
	Lag dist `json:"lag"`
	Age dist `json:"age"`
	// Worst describes the latest delivery; Short the first subscriber that
	// got fewer Snapshots than it had ticks (empty when none did).
	Worst string `json:"worst,omitempty"`
	Short string `json:"short,omitempty"`
	// The slow subscribers (not in the figures above): Snapshots they read
	// in the window, and how many the server closed.
	SlowSnapshots uint64 `json:"slow_snapshots"`
	SlowClosed    uint64 `json:"slow_closed"`
}

// reportGrace: ticks in the last second of the window are not counted
// (their Snapshots may still be on their way).
const reportGrace = time.Second

// tally counts what the readers saw besides the samples.
type tally struct {
	Duplicates     uint64 `json:"duplicates"` // Snapshots for a tick already served, in the window
	ClosedByServer uint64 `json:"closed_by_server"`
	ErrorEvents    uint64 `json:"error_events"`
	Heartbeats     uint64 `json:"heartbeats"`
	Pings          uint64 `json:"pings"`
	OtherFrames    uint64 `json:"other_frames"`
	BadFrames      uint64 `json:"bad_frames"` // protocol violations; the connection is dropped
	BadTimestamps  uint64 `json:"bad_timestamps"`
	FirstProblem   string `json:"first_problem,omitempty"`
}

func (t *tally) add(o tally) {
	t.Duplicates += o.Duplicates
	t.ClosedByServer += o.ClosedByServer
	t.ErrorEvents += o.ErrorEvents
	t.Heartbeats += o.Heartbeats
	t.Pings += o.Pings
	t.OtherFrames += o.OtherFrames
	t.BadFrames += o.BadFrames
	t.BadTimestamps += o.BadTimestamps
	if t.FirstProblem == "" {
		t.FirstProblem = o.FirstProblem
	}
}

func (t *tally) note(format string, args ...any) {
	if t.FirstProblem == "" {
		t.FirstProblem = fmt.Sprintf(format, args...)
		if len(t.FirstProblem) > 200 {
			t.FirstProblem = t.FirstProblem[:200] + "…"
		}
	}
}
