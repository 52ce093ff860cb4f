package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// SyslogConfig configures a SyslogSource.
type SyslogConfig struct {
	// Listen is udp://host:port or unix:///path (a datagram socket, created
	// and removed by the source). Only loopback and local sockets make sense:
	// syslog has no authentication. Required.
	Listen string
	// Parser reads each message (syslog header included). Required.
	Parser LineParser
	// Recorder counts the parsed requests; it must be fresh. Required.
	Recorder Recorder
	// Logger and Now as for LogConfig.
	Logger *slog.Logger
	Now    func() time.Time
}

// SyslogReadBuffer is the socket receive buffer a SyslogSource asks for.
const SyslogReadBuffer = 4 << 20

// maxDatagram bounds one syslog message (HAProxy's default log length is
// 1024; its maximum 65535).
const maxDatagram = 64 << 10

// SyslogSource receives access-log lines as syslog datagrams, which is how
// HAProxy logs (it writes no files itself). It is exact while it runs and
// keeps up: messages sent while no collector listens are lost (datagrams
// are not queued), which the checkpoint cannot recover, and so are messages
// that do not fit the socket's queue. Prefer UDP on loopback, whose receive
// buffer is large (SyslogReadBuffer, capped by net.core.rmem_max), to a unix
// datagram socket, whose queue holds net.unix.max_dgram_qlen messages (10
// by default on Linux: bursts are dropped). Or have HAProxy log to a file
// (`log stdout` under systemd or a container runtime that writes it to a
// file) and use a LogSource.
//
// Concurrency: as LogSource.
type SyslogSource struct {
	cfg  SyslogConfig
	log  *slog.Logger
	conn net.PacketConn
	unix string // socket path to remove

	mu    sync.Mutex
	base  proto.Counters
	stats LineStats
	bad   *rateLimitedLog
}

// Validate reports the first value in c that no default repairs.
func (c SyslogConfig) Validate() error {
	switch {
	case c.Parser == nil || c.Recorder == nil:
		return errors.New("parser and recorder are required")
	case !strings.HasPrefix(c.Listen, "udp://") && !strings.HasPrefix(c.Listen, "unix://"):
		return fmt.Errorf("listen %q: want udp://host:port or unix:///path", c.Listen)
	}
	return nil
}

// withDefaults fills zero fields; call it after Validate.
func (c SyslogConfig) withDefaults() SyslogConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// NewSyslogSource validates cfg and binds the socket, so a bad address fails
// at start and HAProxy can send as soon as this returns.
func NewSyslogSource(cfg SyslogConfig) (*SyslogSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new syslog source: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &SyslogSource{cfg: cfg, base: proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)}}
	var err error
	switch {
	case strings.HasPrefix(cfg.Listen, "udp://"):
		s.conn, err = net.ListenPacket("udp", strings.TrimPrefix(cfg.Listen, "udp://"))
	case strings.HasPrefix(cfg.Listen, "unix://"):
		s.unix = strings.TrimPrefix(cfg.Listen, "unix://")
		removeStaleSocket(s.unix)
		s.conn, err = net.ListenPacket("unixgram", s.unix)
	}
	if err != nil {
		return nil, fmt.Errorf("new syslog source: listen on %s: %w", cfg.Listen, err)
	}
	// Senders drop what does not fit (HAProxy counts them as dropped logs):
	// ask for a large buffer to ride out bursts; the kernel caps it at
	// net.core.rmem_max.
	if rb, ok := s.conn.(interface{ SetReadBuffer(int) error }); ok {
		_ = rb.SetReadBuffer(SyslogReadBuffer)
	}
	s.log = cfg.Logger.With("source", "syslog", "listen", s.conn.LocalAddr().String())
	s.bad = newRateLimitedLog(s.log, cfg.Now, DefaultBadLineLogEvery)
	return s, nil
}

// Addr is the bound address (useful with udp://127.0.0.1:0).
func (s *SyslogSource) Addr() net.Addr { return s.conn.LocalAddr() }

// Stats returns the source's line counts.
func (s *SyslogSource) Stats() *LineStats { return &s.stats }

// Restore resumes the counters of a checkpoint; there is no position.
func (s *SyslogSource) Restore(counters proto.Counters, _ json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = counters
	s.base.ActiveConnections = 0
	return nil
}

// Read returns the counters; the state is empty.
func (s *SyslogSource) Read() (proto.Counters, json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return addCounters(s.base, s.cfg.Recorder.Counters()), json.RawMessage("{}")
}

// Run receives messages until ctx ends, then closes the socket.
func (s *SyslogSource) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	defer func() {
		s.conn.Close()
		if s.unix != "" {
			os.Remove(s.unix)
		}
	}()
	buf := make([]byte, maxDatagram)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("receive syslog: %w", err)
		}
		// One message per datagram, possibly with a trailing newline; some
		// senders batch lines separated by newlines.
		for line := range bytes.SplitSeq(buf[:n], []byte("\n")) {
			line = bytes.TrimRight(line, "\r\x00")
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			s.mu.Lock()
			e, err := s.cfg.Parser.ParseLine(line)
			if err != nil {
				s.stats.Unparseable.Add(1)
				s.bad.note(line, err)
			} else {
				s.stats.Parsed.Add(1)
				s.cfg.Recorder.Record(e.Status, e.Duration)
			}
			s.mu.Unlock()
		}
	}
}

// removeStaleSocket removes the socket file a killed collector left behind,
// so a restart can bind it again; a socket someone still listens on is left
// alone (binding then fails, clearly).
func removeStaleSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	c, err := net.Dial("unixgram", path)
	if err == nil {
		c.Close()
		return
	}
	os.Remove(path)
}
