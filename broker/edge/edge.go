// Package edge serves the Kairos-compatible /ws/metrics WebSocket protocol to
// very many subscribers at a small, fixed cost per connection.
//
// An Edge subscribes to the live snapshots the aggregator publishes on NATS,
// keeps the latest per scope and an in-memory window of cluster history
// (backfilled from JetStream), and pushes snapshots to each WebSocket client
// on its own cadence. Plain HTTP requests on the same port are served by an
// internal http.Server (/healthz, /readyz and Config.HTTP).
//
// # Shape
//
// After the zero-copy upgrade there is no goroutine per connection. One epoll
// goroutine (poller) reads every connection without blocking and parses
// frames from a per-connection buffer that is nil while idle; a few scheduler
// shards (one per core) each own a timing wheel of 10 ms slots and push
// snapshots, heartbeats and pings when a connection's time comes. A snapshot
// is encoded once per metric set, WebSocket header included, and the same
// immutable bytes are written to every subscriber of that set.
//
// # Protocol
//
//   - Right after the upgrade the client receives exactly one Snapshot (all
//     metrics) — or, when the edge has no snapshot yet, exactly one as soon
//     as the first arrives. That moment is the connection's phase t0: its
//     snapshots then fall at t0 + k·interval, each carrying the newest
//     cluster snapshot held at that tick (the same one again if none newer
//     arrived: the contract is a snapshot per interval, and its timestamp
//     tells its age).
//   - A text message is a subscription; a valid one replaces the current one
//     wholesale. It never triggers an immediate Snapshot: the next one is due
//     at (last snapshot sent + new interval), or at once if that moment has
//     already passed.
//   - include_history: true sends one TimeSeries event per subscribed metric
//     right after the subscription is accepted: the last HistoryWindow
//     (default 1 h) ending at the newest cluster snapshot, downsampled by
//     history.Series to at most HistoryPoints points (default 720, i.e. one
//     point per 5 s). Until the backfill from JetStream has succeeded the
//     series holds only what arrived live since the edge started.
//   - Invalid subscriptions and binary messages get an Error event; the
//     connection and the previous subscription stay. Messages larger than
//     MaxMessageBytes close with 1009, protocol violations with 1002, invalid
//     UTF-8 with 1007.
//   - Liveness: a Heartbeat event every HeartbeatInterval and a WebSocket
//     ping every PingInterval, each connection's first one at a random point
//     of the interval. A connection from which no frame at all arrived for
//     IdleTimeout is sent close 1001 "idle timeout" and closed without
//     waiting for the reply (the peer is presumed gone).
//   - Output that cannot be written at once is queued; an unsent Snapshot is
//     replaced by a newer one (conflated). More than MaxPendingBytes of other
//     queued output closes the connection (1008 "slow consumer"), and so does
//     WriteTimeout without write progress.
//   - Shutdown sends close 1001 "server shutting down" to every client and
//     waits (bounded by its context) for the clients to close.
//
// # Concurrency
//
// New, Run, Shutdown, Addr and Ready are safe to call from any goroutine;
// Run may be called once. Per connection, a small mutex serialises writers
// (gobwas/ws does not); input parsing belongs to the poller goroutine and
// scheduling state to the connection's shard goroutine. Run joins every
// goroutine it started before it returns.
//
// The edge needs Linux (epoll).
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for Config's zero fields.
const (
	DefaultListen            = ":5900"
	DefaultHistoryWindow     = time.Hour
	DefaultHistoryPoints     = 720
	DefaultMaxMessageBytes   = 4096
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultPingInterval      = 30 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultHandshakeTimeout  = 5 * time.Second
	DefaultMaxPendingBytes   = 1 << 20
	DefaultWriteTimeout      = 10 * time.Second
	DefaultNamespace         = "meridian"

	// maxInterval caps the timing settings: larger values mean "never".
	maxInterval = 100 * 365 * 24 * time.Hour

	// readyFreshness is how recent the last cluster snapshot must be for
	// Ready.
	readyFreshness = 5 * time.Second
	// defaultShutdownGrace bounds the graceful close when Run's context
	// ends without a Shutdown call (which would bring its own deadline).
	defaultShutdownGrace = 5 * time.Second
)

// Sentinel errors.
var (
	// ErrClosed is returned by Run after Shutdown.
	ErrClosed = errors.New("edge closed")
	// ErrRunning is returned by a second Run call.
	ErrRunning = errors.New("edge already running")
	// ErrUnsupported is returned by Run on platforms without epoll.
	ErrUnsupported = errors.New("edge requires Linux epoll")
)

// Config configures an Edge. Zero fields take the documented defaults.
// HeartbeatInterval, PingInterval, IdleTimeout and WriteTimeout are capped
// at 100 years, which is how to switch one off in effect.
type Config struct {
	// Listen is the TCP address for WebSocket and HTTP. Default ":5900".
	Listen string
	// Listener, when set, is used instead of listening on Listen; the Edge
	// closes it on shutdown. Accepted connections must be TCP (or anything
	// implementing syscall.Conn with a socket underneath).
	Listener net.Listener
	// NATS is the connection live snapshots and history come from. Required.
	NATS *nats.Conn
	// HistoryWindow is how much cluster history is kept in memory and served
	// with include_history. Default 1h.
	HistoryWindow time.Duration
	// HistoryPoints is the most points per TimeSeries event. Default 720.
	HistoryPoints int
	// MaxMessageBytes bounds a client message (all fragments); larger ones
	// close the connection with 1009. Default 4096.
	MaxMessageBytes int
	// HeartbeatInterval is the period of Heartbeat events. Default 30s.
	HeartbeatInterval time.Duration
	// PingInterval is the period of WebSocket pings. Default 30s.
	PingInterval time.Duration
	// IdleTimeout closes a connection from which no frame of any kind
	// arrived for this long. Default 75s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds reading the HTTP request and the upgrade.
	// Default 5s.
	HandshakeTimeout time.Duration
	// MaxPendingBytes bounds queued non-snapshot output per connection;
	// beyond it the connection is closed with 1008. Default 1 MiB.
	MaxPendingBytes int
	// WriteTimeout closes a connection whose queued output made no progress
	// for this long. Default 10s.
	WriteTimeout time.Duration
	// HTTP serves every non-WebSocket request other than /healthz and
	// /readyz. Default: 404.
	HTTP http.Handler
	// Registerer receives the edge's metrics; nil means don't register.
	Registerer prometheus.Registerer
	// Namespace prefixes metric names. Default "meridian".
	Namespace string
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the wall clock (snapshot freshness, timestamps, lag metrics).
	// Scheduling always uses the monotonic clock. Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.HistoryWindow <= 0 {
		c.HistoryWindow = DefaultHistoryWindow
	}
	if c.HistoryPoints <= 0 {
		c.HistoryPoints = DefaultHistoryPoints
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	// Far beyond any useful setting ("never"), and safe from overflow in
	// the scheduler's nanosecond arithmetic.
	for _, d := range []*time.Duration{&c.HeartbeatInterval, &c.PingInterval, &c.IdleTimeout, &c.WriteTimeout} {
		*d = min(*d, maxInterval)
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Edge is a /ws/metrics server. Build it with New, serve with Run, stop with
// Shutdown.
type Edge struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	ln   net.Listener
	base time.Time // origin of the monotonic scheduling clock

	reg       registry
	poller    *poller
	shards    []*shard
	nextShard atomic.Uint32
	hist      *historyServer
	beat      heartbeatCache

	cluster      atomic.Pointer[snapFrames] // latest cluster snapshot, encoded lazily per metric set
	lastSnapWall atomic.Int64               // Config.Now() in Unix ns when it arrived
	scopesMu     sync.Mutex
	scopes       map[proto.Scope]proto.Snapshot

	httpLn   *chanListener
	httpSrv  *http.Server
	upgrader ws.Upgrader
	// frameTooBig is the 1009 close frame naming MaxMessageBytes.
	frameTooBig []byte

	hsSem     chan struct{} // bounds concurrent handshakes
	hsWG      sync.WaitGroup
	upgradeWG sync.WaitGroup // WebSocket upgrades through the HTTP server
	hsMu      sync.Mutex
	hsConns   map[net.Conn]struct{} // handshakes in flight, closed on shutdown
	running   atomic.Bool           // serving and not shutting down
	draining  atomic.Bool           // shutdown started: no new connections

	mu          sync.Mutex
	started     bool
	stopping    bool
	graceCtx    context.Context
	stop        chan struct{} // closed by Shutdown
	done        chan struct{} // closed when Run returns
	lnClosed    chan struct{} // closed with the listener
	closeLnOnce sync.Once
}

// New validates cfg, applies defaults and opens the listener (so Addr works
// before Run). A New that is not followed by Run must be followed by
// Shutdown to release the listener.
func New(cfg Config) (*Edge, error) {
	if cfg.NATS == nil {
		return nil, errors.New("new edge: Config.NATS is required")
	}
	cfg = cfg.withDefaults()
	e := &Edge{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "edge"),
		base:     time.Now(),
		scopes:   make(map[proto.Scope]proto.Snapshot),
		hsSem:    make(chan struct{}, maxHandshakes),
		hsConns:  make(map[net.Conn]struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		lnClosed: make(chan struct{}),
	}
	e.frameTooBig = closeFrame(ws.StatusMessageTooBig, fmt.Sprintf("message larger than %d bytes", cfg.MaxMessageBytes))
	e.hist = newHistoryServer(cfg.HistoryWindow, cfg.HistoryPoints, cfg.Now)
	n := min(runtime.GOMAXPROCS(0), maxShards)
	e.shards = make([]*shard, n)
	for i := range e.shards {
		e.shards[i] = newShard(e)
	}
	m, err := newMetrics(e, cfg.Namespace, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new edge: %w", err)
	}
	e.m = m
	e.ln = cfg.Listener
	if e.ln == nil {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("new edge: listen on %s: %w", cfg.Listen, err)
		}
		e.ln = ln
	}
	e.httpLn = newChanListener(e.ln.Addr())
	e.httpSrv = e.newHTTPServer()
	return e, nil
}

// Addr is the address the edge listens on.
func (e *Edge) Addr() net.Addr { return e.ln.Addr() }

// Ready reports whether the edge is serving, connected to NATS, and received
// a cluster snapshot within the last 5 seconds.
func (e *Edge) Ready() bool {
	_, ok := e.readiness()
	return ok
}

// readiness explains Ready for /readyz.
func (e *Edge) readiness() (string, bool) {
	if !e.running.Load() {
		return "edge is not serving", false
	}
	if !e.cfg.NATS.IsConnected() {
		return "not connected to NATS", false
	}
	last := e.lastSnapWall.Load()
	if last == 0 {
		return "no cluster snapshot received yet", false
	}
	if age := e.cfg.Now().Sub(time.Unix(0, last)); age > readyFreshness {
		return fmt.Sprintf("last cluster snapshot arrived %s ago", age.Round(time.Millisecond)), false
	}
	return "ready", true
}

// mono is the scheduling clock: monotonic nanoseconds since New.
func (e *Edge) mono() int64 { return int64(time.Since(e.base)) }

// Run serves until ctx ends or Shutdown is called, then closes every
// connection gracefully (bounded by Shutdown's context, or 5 s when ctx
// ended) and returns once every goroutine it started has exited.
func (e *Edge) Run(ctx context.Context) error {
	e.mu.Lock()
	switch {
	case e.stopping:
		e.mu.Unlock()
		return ErrClosed
	case e.started:
		e.mu.Unlock()
		return ErrRunning
	}
	e.started = true
	e.mu.Unlock()
	defer close(e.done)

	p, err := newPoller(e)
	if err != nil {
		e.closeListener()
		return fmt.Errorf("start edge: %w", err)
	}
	e.poller = p
	msgs := make(chan *nats.Msg, snapshotQueue)
	sub, err := e.cfg.NATS.ChanSubscribe(proto.SnapshotSubjectAll, msgs)
	if err != nil {
		p.close()
		e.closeListener()
		return fmt.Errorf("start edge: subscribe to %s: %w", proto.SnapshotSubjectAll, err)
	}

	var wg sync.WaitGroup
	workersStop := make(chan struct{})
	histCtx, cancelHist := context.WithCancel(context.Background())
	goJoin := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	// Live first, then history: a snapshot published while the history
	// loads is caught by the subscription and deduplicated by the Ring.
	goJoin(func() { e.intake(msgs, workersStop) })
	goJoin(func() { e.hist.loadLoop(histCtx, e.cfg.NATS, e.log, e.m.historyLoadErrors) })
	goJoin(p.run)
	for _, s := range e.shards {
		goJoin(func() { s.run(workersStop) })
	}
	httpDone := make(chan struct{})
	goJoin(func() {
		defer close(httpDone)
		err := e.httpSrv.Serve(e.httpLn)
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			e.log.Error("http server stopped", "err", err)
		}
	})
	acceptDone := make(chan struct{})
	goJoin(func() {
		defer close(acceptDone)
		e.acceptLoop()
	})
	e.running.Store(true)
	e.log.Info("edge serving", "addr", e.Addr().String(), "shards", len(e.shards))

	select {
	case <-ctx.Done():
	case <-e.stop:
	}
	grace, cancelGrace := e.graceContext()
	defer cancelGrace()
	e.running.Store(false)
	e.draining.Store(true)

	// 1. Stop taking connections: the listener, handshakes in flight, HTTP.
	e.closeListener()
	<-acceptDone
	e.closeHandshakes()
	e.hsWG.Wait()
	if err := e.httpSrv.Shutdown(grace); err != nil {
		e.httpSrv.Close()
	}
	<-httpDone
	e.upgradeWG.Wait()
	// 2. Close every WebSocket: 1001 first, then wait for the clients.
	e.drain(grace)
	// 3. Stop the workers.
	cancelHist()
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		e.log.Debug("unsubscribe snapshots", "err", err)
	}
	close(workersStop)
	p.stop()
	wg.Wait()
	p.close()
	e.log.Info("edge stopped")
	return nil
}

// graceContext is the deadline for closing connections gracefully.
func (e *Edge) graceContext() (context.Context, context.CancelFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.graceCtx != nil {
		return e.graceCtx, func() {}
	}
	return context.WithTimeout(context.Background(), defaultShutdownGrace)
}

// Shutdown stops the edge: no new connections, close 1001 to every client,
// a wait bounded by ctx for them to close, then the rest is closed. It waits
// for Run to return (or ctx to end). It is idempotent and may be called
// without Run, to release the listener.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if !e.stopping {
		e.stopping = true
		e.graceCtx = ctx
		close(e.stop)
	}
	started := e.started
	e.mu.Unlock()
	if !started {
		e.closeListener()
		return nil
	}
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down edge: %w", ctx.Err())
	}
}

func (e *Edge) closeListener() {
	e.closeLnOnce.Do(func() {
		close(e.lnClosed)
		if err := e.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			e.log.Debug("close listener", "err", err)
		}
		e.httpLn.Close()
	})
}

// drain sends close 1001 to every connection, waits for them to close until
// ctx ends, and closes the rest.
func (e *Edge) drain(ctx context.Context) {
	w := newFDWriter()
	for _, c := range e.reg.seal() {
		c.startClose(w, frameCloseShutdown, reasonShutdown, closeWait)
	}
	if err := e.reg.waitEmpty(ctx); err != nil {
		for _, c := range e.reg.all() {
			c.close(reasonShutdown)
		}
	}
}

// intake applies live snapshots until stop.
func (e *Edge) intake(msgs <-chan *nats.Msg, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case m := <-msgs:
			e.acceptSnapshot(m.Data)
		}
	}
}

// acceptSnapshot decodes one live snapshot and keeps it if it is the newest
// of its scope.
func (e *Edge) acceptSnapshot(data []byte) {
	s, err := proto.DecodeSnapshot(data)
	if err != nil {
		e.m.snapshotsInvalid.Inc()
		e.log.Debug("drop invalid snapshot", "err", err)
		return
	}
	if !e.storeScope(s) {
		e.m.snapshotsStale.Inc()
		return
	}
	e.m.snapshotsAccepted.Inc()
	if s.Scope.Kind != proto.ScopeCluster {
		return
	}
	e.lastSnapWall.Store(e.cfg.Now().UnixNano())
	e.hist.add(s)
	if e.cluster.Swap(newSnapFrames(s)) == nil {
		// Connections that arrived before any snapshot wait in their shard.
		for _, sh := range e.shards {
			sh.wake()
		}
	}
}

// storeScope keeps s as the latest of its scope unless a newer one is held.
// Scopes silent for scopeTTL (departed instances) are forgotten.
func (e *Edge) storeScope(s proto.Snapshot) bool {
	e.scopesMu.Lock()
	defer e.scopesMu.Unlock()
	if prev, ok := e.scopes[s.Scope]; ok && !s.Time.After(prev.Time) {
		return false
	}
	e.scopes[s.Scope] = s
	if len(e.scopes) > 1 && s.Scope.Kind == proto.ScopeCluster {
		for k, v := range e.scopes {
			if s.Time.Sub(v.Time) > scopeTTL {
				delete(e.scopes, k)
			}
		}
	}
	return true
}

// latest returns the newest snapshot held for scope.
func (e *Edge) latest(scope proto.Scope) (proto.Snapshot, bool) {
	e.scopesMu.Lock()
	defer e.scopesMu.Unlock()
	s, ok := e.scopes[scope]
	return s, ok
}

// pickShard spreads connections over the shards round-robin.
func (e *Edge) pickShard() *shard {
	return e.shards[int(e.nextShard.Add(1))%len(e.shards)]
}

const (
	// maxShards caps the scheduler shards; more cores than this do not
	// make one edge's writes faster (the kernel's socket locks do not scale
	// further for us).
	maxShards = 8
	// snapshotQueue is the NATS delivery buffer; snapshots are state, so
	// dropping on overflow (NATS slow-consumer) only loses stale ones.
	snapshotQueue = 256
	// scopeTTL forgets region/instance scopes that stopped publishing.
	scopeTTL = 10 * time.Minute
)
