// Package naiveedge is the baseline of `meridian bench`: a deliberately
// straightforward /ws/metrics server, written the way one would without
// designing for many subscribers, so that the edge's figures are compared
// with something honest. It exists only for the benchmark; do not deploy it.
//
// Per connection it keeps net/http's hijacked connection and bufio buffers,
// runs a reader goroutine plus a writer goroutine (the HTTP handler's), holds
// a time.Ticker for the subscription's interval, and encodes every delivery
// with json.Marshal. Each frame is written through the bufio.Writer and
// flushed, so a delivery is one write(2), as in the edge.
//
// It speaks as much of the Kairos protocol as the benchmark client needs:
//
//   - one Snapshot (all metrics) right after the upgrade; that moment is the
//     connection's phase t0, and its Snapshots fall at t0 + k·interval;
//   - a text message is a subscription (proto.ParseSubscription); a valid one
//     replaces the current one and keeps the phase: the next Snapshot is due
//     at the last one plus the new interval (at once if that has passed); an
//     invalid one gets an Error event;
//   - periodic Snapshots carry the newest cluster snapshot, restricted to the
//     subscribed metrics;
//   - pings are answered, close frames echoed.
//
// No history, heartbeats, server pings, idle timeouts or fragmented
// messages.
//
// # Concurrency
//
// New, Run, Shutdown, Addr and Stats are safe to call from any goroutine;
// Run may be called once and joins every goroutine it started (including the
// per-connection ones, which net/http does not track after a hijack).
package naiveedge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for Config's zero fields.
const (
	DefaultListen          = "127.0.0.1:0"
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMaxMessageBytes = 4096
	// Path is the only endpoint served.
	Path = "/ws/metrics"
)

// Sentinel errors.
var (
	// ErrClosed is returned by Run after Shutdown or a first Run.
	ErrClosed = service.ErrClosed
	// ErrRunning is returned by a second Run call.
	ErrRunning = service.ErrRunning
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Listen is the TCP address to serve on. Default "127.0.0.1:0".
	Listen string
	// Listener, when set, is used instead of Listen; Shutdown closes it.
	Listener net.Listener
	// NATS is where cluster snapshots come from. Required.
	NATS *nats.Conn
	// WriteTimeout bounds each frame write (set before every write, as a
	// straightforward server does). Default 10s.
	WriteTimeout time.Duration
	// MaxMessageBytes bounds a client message; larger closes the
	// connection. Default 4096.
	MaxMessageBytes int
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Stats are the server's counters.
type Stats struct {
	// Connections is the number of open WebSocket connections.
	Connections int
	// Deliveries counts Snapshot frames written, the first one included.
	Deliveries uint64
	// SkippedTicks counts ticks the time.Ticker dropped because the writer
	// was late (the baseline's equivalent of conflation).
	SkippedTicks uint64
	// WriteErrors counts failed writes (each ends its connection).
	WriteErrors uint64
}

// Server is the naive /ws/metrics server.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  net.Listener
	srv *http.Server
	sub *nats.Subscription

	latest       atomic.Pointer[proto.Snapshot]
	deliveries   atomic.Uint64
	skippedTicks atomic.Uint64
	writeErrors  atomic.Uint64

	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	closing bool
	connWG  sync.WaitGroup // handler and reader goroutines of upgraded connections
	life    service.Lifecycle
}

// New validates cfg, opens the listener (so Addr works before Run) and
// subscribes to the cluster snapshots. A New not followed by Run must be
// followed by Shutdown to release both.
func New(cfg Config) (*Server, error) {
	if cfg.NATS == nil {
		return nil, errors.New("new naive edge: Config.NATS is required")
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "naiveedge"),
		conns: make(map[*wsConn]struct{}),
		ln:    cfg.Listener,
	}
	if s.ln == nil {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("new naive edge: listen on %s: %w", cfg.Listen, err)
		}
		s.ln = ln
	}
	// Subscribed here rather than in Run, so that a snapshot published on
	// the same connection after New returns is never missed.
	subject := proto.SnapshotSubject(proto.ClusterScope())
	sub, err := cfg.NATS.Subscribe(subject, func(m *nats.Msg) { s.onSnapshot(m.Data) })
	if err != nil {
		_ = s.ln.Close()
		return nil, fmt.Errorf("new naive edge: subscribe to %s: %w", subject, err)
	}
	s.sub = sub
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.serveWS)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// HasSnapshot reports whether a cluster snapshot arrived (before that, new
// connections get no first Snapshot and wait for the first tick).
func (s *Server) HasSnapshot() bool { return s.latest.Load() != nil }

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return Stats{
		Connections:  n,
		Deliveries:   s.deliveries.Load(),
		SkippedTicks: s.skippedTicks.Load(),
		WriteErrors:  s.writeErrors.Load(),
	}
}

// Run serves until ctx ends or Shutdown is called, then closes every
// connection and returns once all goroutines it started have exited.
func (s *Server) Run(ctx context.Context) error {
	ctx, err := s.life.Start(ctx)
	if err != nil {
		return err
	}
	defer s.life.Exit()

	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()

	<-ctx.Done() // ctx or Shutdown
	// Hijacked connections are ours: http.Server.Close leaves them open.
	_ = s.srv.Close()
	serveErr := <-served
	s.closeAll()
	s.connWG.Wait()
	s.unsubscribe()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve naive edge: %w", serveErr)
	}
	return nil
}

// Shutdown stops the server and waits for Run to return or ctx to end. It
// is idempotent and may be called without Run, to release the listener.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.life.Stop() {
		s.unsubscribe()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("close listener: %w", err)
		}
		return nil
	}
	if err := s.life.Wait(ctx); err != nil {
		return fmt.Errorf("shut down naive edge: %w", err)
	}
	return nil
}

func (s *Server) unsubscribe() {
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		s.log.Debug("unsubscribe snapshots", "err", err)
	}
}

// onSnapshot keeps a valid cluster snapshot if it is newer than the one held.
func (s *Server) onSnapshot(data []byte) {
	snap, err := proto.DecodeSnapshot(data)
	if err != nil {
		s.log.Debug("drop invalid snapshot", "err", err)
		return
	}
	if prev := s.latest.Load(); prev != nil && !snap.Time.After(prev.Time) {
		return
	}
	s.latest.Store(&snap)
}

// track registers c and accounts for its two goroutines; false once the
// server is closing.
func (s *Server) track(c *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(2)
	return true
}

func (s *Server) untrack(c *wsConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll refuses new connections and closes the open ones.
func (s *Server) closeAll() {
	s.mu.Lock()
	s.closing = true
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
}

// snapshotEvent is the Kairos Snapshot event; absent metrics are nil.
type snapshotEvent struct {
	Type              string    `json:"type"`
	Timestamp         time.Time `json:"timestamp"`
	RequestsTotal     *uint64   `json:"requests_total,omitempty"`
	RequestsSuccess   *uint64   `json:"requests_success,omitempty"`
	RequestsError     *uint64   `json:"requests_error,omitempty"`
	ActiveConnections *int64    `json:"active_connections,omitempty"`
	AvgResponseTime   *float64  `json:"avg_response_time,omitempty"`
	SuccessRate       *float64  `json:"success_rate,omitempty"`
}

// encodeSnapshot is the per-delivery json.Marshal of the baseline.
func encodeSnapshot(s *proto.Snapshot, set proto.MetricSet) ([]byte, error) {
	ev := snapshotEvent{Type: proto.EventSnapshot, Timestamp: s.Time.UTC()}
	if set.Has(proto.RequestsTotal) {
		ev.RequestsTotal = &s.RequestsTotal
	}
	if set.Has(proto.RequestsSuccess) {
		ev.RequestsSuccess = &s.RequestsSuccess
	}
	if set.Has(proto.RequestsError) {
		ev.RequestsError = &s.RequestsError
	}
	if set.Has(proto.ActiveConnections) {
		ev.ActiveConnections = &s.ActiveConnections
	}
	if set.Has(proto.AvgResponseTime) {
		ev.AvgResponseTime = &s.AvgResponseTimeMs
	}
	if set.Has(proto.SuccessRate) {
		ev.SuccessRate = &s.SuccessRate
	}
	return json.Marshal(ev)
}

func encodeError(msg string) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}{proto.EventError, msg})
	return b
}
