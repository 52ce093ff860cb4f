package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for Config's zero fields.
const (
	DefaultListen        = ":5900"
	DefaultHistoryWindow = time.Hour
	// DefaultHistoryPoints caps a subscription's history_points: the
	// protocol's maximum, so every valid request is honoured. (Clients that
	// do not say get proto.DefaultHistoryPoints, 720.)
	DefaultHistoryPoints     = proto.MaxHistoryPoints
	DefaultMaxMessageBytes   = 4096
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultPingInterval      = 30 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultHandshakeTimeout  = 5 * time.Second
	DefaultMaxPendingBytes   = 1 << 20
	DefaultWriteTimeout      = 10 * time.Second
	DefaultNamespace         = "meridian"

	// Admission limits (see Config).
	DefaultMaxConns              = 100_000
	DefaultMaxConnsPerAddr       = 1_000
	DefaultUpgradesPerSecond     = 20.0
	DefaultUpgradeBurst          = 50
	DefaultRESTRequestsPerSecond = 10.0
	DefaultRESTBurst             = 20
	DefaultLookupsPerSecond      = 1.0
	DefaultLookupBurst           = 5
	DefaultMaxHandshakes         = 1024
	DefaultMaxHandshakesPerAddr  = 64
	DefaultMemoryReleaseUpgrades = 1000

	DefaultHistoryWorkers         = 4
	DefaultHistoryTimeout         = 10 * time.Second
	DefaultHistoryRequestInterval = 12 * time.Second // 5 per minute
	DefaultHistoryRequestBurst    = 2
	DefaultMaxReplaySnapshots     = 3600
	DefaultMaxHistoryScopes       = 16
	DefaultMaxHistoryPendingBytes = 16 << 20
	// DefaultFollowGrace keeps an instance followed half a minute after its
	// last client left: long enough for a client's reconnect, short enough
	// that a departed dashboard costs the cluster little.
	DefaultFollowGrace = 30 * time.Second

	// maxInterval caps the timing settings: larger values mean "never".
	maxInterval = 100 * 365 * 24 * time.Hour

	// readyFreshness is how recent the last cluster snapshot must be for
	// Ready.
	readyFreshness = 5 * time.Second
	// defaultShutdownGrace bounds the graceful close when Run's context
	// ends without a Shutdown call (which would bring its own deadline).
	defaultShutdownGrace = 5 * time.Second
)

// CloseTokenExpired is the close code of a connection whose token expired
// (reason "token expired"); 4401 mirrors HTTP 401 in the private range.
const CloseTokenExpired ws.StatusCode = 4401

// Sentinel errors.
var (
	// ErrClosed is returned by Run after Shutdown or a first Run.
	ErrClosed = service.ErrClosed
	// ErrRunning is returned by a second Run call.
	ErrRunning = service.ErrRunning
	// ErrUnsupported is returned by Run on platforms without epoll.
	ErrUnsupported = errors.New("edge requires Linux epoll")
)

// Config configures an Edge. Zero fields take the documented defaults;
// negative numbers are rejected by Validate (and so by New).
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
	// HistoryWindow is how much history of a scope is kept in memory: the
	// cluster's always, other scopes' once a history request named them.
	// include_history within it is served from memory, beyond it from the
	// rollup stream. Default 1h.
	HistoryWindow time.Duration
	// HistoryPoints caps history_points, the most points per TimeSeries
	// event. Default DefaultHistoryPoints (10000, the protocol's maximum).
	HistoryPoints int
	// HistoryWorkers is the number of goroutines serving history requests
	// and scope lookups (the only work that waits on JetStream). Default 4.
	HistoryWorkers int
	// HistoryTimeout bounds the JetStream reads of one history request or
	// scope lookup. Default 10s.
	HistoryTimeout time.Duration
	// HistoryRequestInterval and HistoryRequestBurst rate-limit history
	// requests (include_history or since) per connection with a token
	// bucket: one request earned per interval, at most burst saved.
	// Defaults 12s (5 per minute) and 2.
	HistoryRequestInterval time.Duration
	HistoryRequestBurst    int
	// MaxReplaySnapshots caps a since replay; the newest are replayed and an
	// Error event says from when. Default 3600.
	MaxReplaySnapshots int
	// MaxHistoryScopes is how many scopes besides the cluster keep their
	// history in memory (least recently requested dropped first). Default 16.
	MaxHistoryScopes int
	// MaxHistoryPendingBytes bounds queued history output (TimeSeries and
	// replayed snapshots) per connection, which MaxPendingBytes does not
	// count; beyond it the connection is closed with 1008. Default 16 MiB.
	MaxHistoryPendingBytes int
	// FollowGrace is how long the edge stays subscribed to an instance's
	// snapshots (and announces interest in it) after the last connection
	// following it left, so that a reconnecting client finds it current
	// (see follow.go). Default DefaultFollowGrace.
	FollowGrace time.Duration
	// MaxMessageBytes bounds a client message (all fragments); larger ones
	// close the connection with 1009. Default 4096.
	MaxMessageBytes int
	// HeartbeatInterval is the period of Heartbeat events. Default 30s.
	HeartbeatInterval time.Duration
	// StaleAfter is how old a scope's newest snapshot may be before its
	// subscribers are told, once per stall, that the data is stale (see
	// stale.go). Default DefaultStaleAfter.
	StaleAfter time.Duration
	// PingInterval is the period of WebSocket pings. Default 30s.
	PingInterval time.Duration
	// IdleTimeout closes a connection from which no frame of any kind
	// arrived for this long. Default 75s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds reading the HTTP request and the upgrade.
	// Default 5s.
	HandshakeTimeout time.Duration
	// MaxPendingBytes bounds queued output per connection other than live
	// snapshots (conflated) and history (MaxHistoryPendingBytes); beyond it
	// the connection is closed with 1008. Default 1 MiB.
	MaxPendingBytes int
	// WriteTimeout closes a connection whose queued output made no progress
	// for this long. Default 10s.
	WriteTimeout time.Duration
	// HTTP serves every non-WebSocket request other than /healthz and
	// /readyz. Default: 404. With Auth set, its requests need a token too
	// (Authorization: Bearer or ?token=), and auth.GrantFrom(r.Context())
	// says which scopes it may read; they are rate limited per address.
	HTTP http.Handler
	// PublicHTTP lists ServeMux patterns (such as "GET /{$}") on which HTTP
	// is served without a token even with Auth set: content that holds no
	// data, like the dashboard's page and scripts, which a browser must load
	// before it can present a token. Origin and rate limits still apply.
	PublicHTTP []string

	// TLS, when set, makes the port serve only https and wss (plain HTTP
	// gets 400). Use certfile.Reloader's ServerConfig for certificates
	// reloaded on rotation. TLS connections cost more memory (see tls.go).
	TLS *tls.Config

	// Auth verifies client tokens (*auth.Verifier). Nil serves anonymous
	// clients: the library default; the meridian edge command refuses it
	// unless --anonymous is given.
	Auth Verifier
	// AllowedOrigins lists the browser origins that may connect: exact
	// ("https://app.example.com:8443", "null") or patterns ("*.example.com"
	// with any scheme and port, "https://*.example.com"). Empty: only
	// same-origin pages. Requests without Origin always pass.
	AllowedOrigins []string
	// AnyOrigin accepts every Origin (meridian dev, on loopback).
	AnyOrigin bool
	// MaxConns caps the sockets open on the edge (WebSocket, HTTP and in
	// handshake); beyond it new ones get 503. Default 100000.
	MaxConns int
	// MaxConnsPerAddr caps the sockets of one client IP address; beyond it
	// new ones get 429 (and /healthz still answers). Default 1000.
	MaxConnsPerAddr int
	// UpgradesPerSecond and UpgradeBurst rate-limit WebSocket upgrades per
	// client address (429 with Retry-After). Defaults 20/s and 50.
	UpgradesPerSecond float64
	UpgradeBurst      int
	// RESTRequestsPerSecond and RESTBurst rate-limit Config.HTTP requests
	// per client address. Defaults 10/s and 20.
	RESTRequestsPerSecond float64
	RESTBurst             int
	// LookupsPerSecond and LookupBurst rate-limit, per client address, the
	// JetStream lookups of scopes not held in memory. Defaults 1/s and 5.
	LookupsPerSecond float64
	LookupBurst      int
	// MaxHandshakes caps the connections in their handshake at once;
	// beyond it new ones get 503. Default 1024.
	MaxHandshakes int
	// TrustedProxies are the addresses of reverse proxies in front of the
	// edge: their sockets are exempt from the per-address limits, and the
	// rate limits apply to the client in X-Forwarded-For (rightmost address
	// not in this list) or X-Real-IP instead. Headers from anyone else are
	// ignored.
	TrustedProxies []netip.Prefix
	// MaxHandshakesPerAddr caps one client address's connections in their
	// handshake (slowloris); beyond it new ones get 429. Default 64.
	MaxHandshakesPerAddr int
	// MemoryReleaseUpgrades: after this many WebSocket upgrades, once no
	// handshake has been in flight for a second, the edge collects and
	// returns free memory to the OS (release.go). Default 1000; negative:
	// never.
	MemoryReleaseUpgrades int
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

// Validate reports the first value that no default can repair: a negative
// number or a malformed allowed origin. Zero fields are valid; they take
// the defaults. (New also checks that NATS is set.)
func (c Config) Validate() error {
	_, originErr := newOriginPolicy(c.AllowedOrigins, c.AnyOrigin)
	return service.First(
		service.NonNegative("HistoryWindow", c.HistoryWindow),
		service.NonNegative("HistoryPoints", c.HistoryPoints),
		service.NonNegative("HistoryWorkers", c.HistoryWorkers),
		service.NonNegative("HistoryTimeout", c.HistoryTimeout),
		service.NonNegative("HistoryRequestInterval", c.HistoryRequestInterval),
		service.NonNegative("HistoryRequestBurst", c.HistoryRequestBurst),
		service.NonNegative("MaxReplaySnapshots", c.MaxReplaySnapshots),
		service.NonNegative("MaxHistoryScopes", c.MaxHistoryScopes),
		service.NonNegative("MaxHistoryPendingBytes", c.MaxHistoryPendingBytes),
		service.NonNegative("FollowGrace", c.FollowGrace),
		service.NonNegative("MaxMessageBytes", c.MaxMessageBytes),
		service.NonNegative("HeartbeatInterval", c.HeartbeatInterval),
		service.NonNegative("StaleAfter", c.StaleAfter),
		service.NonNegative("PingInterval", c.PingInterval),
		service.NonNegative("IdleTimeout", c.IdleTimeout),
		service.NonNegative("HandshakeTimeout", c.HandshakeTimeout),
		service.NonNegative("MaxPendingBytes", c.MaxPendingBytes),
		service.NonNegative("WriteTimeout", c.WriteTimeout),
		service.NonNegative("MaxConns", c.MaxConns),
		service.NonNegative("MaxConnsPerAddr", c.MaxConnsPerAddr),
		service.NonNegative("UpgradeBurst", c.UpgradeBurst),
		service.NonNegative("RESTBurst", c.RESTBurst),
		service.NonNegative("LookupBurst", c.LookupBurst),
		service.NonNegative("MaxHandshakes", c.MaxHandshakes),
		service.NonNegative("MaxHandshakesPerAddr", c.MaxHandshakesPerAddr),
		nonNegativeRate("UpgradesPerSecond", c.UpgradesPerSecond),
		nonNegativeRate("RESTRequestsPerSecond", c.RESTRequestsPerSecond),
		nonNegativeRate("LookupsPerSecond", c.LookupsPerSecond),
		originErr,
		validPatterns(c.PublicHTTP),
	)
}

// validPatterns checks PublicHTTP patterns the way the edge's mux will
// register them beside its own routes (an invalid or conflicting one would
// make that panic).
func validPatterns(patterns []string) (err error) {
	mux := http.NewServeMux()
	for _, p := range append([]string{"/healthz", "/readyz", wsPath}, patterns...) {
		func() {
			defer func() {
				if r := recover(); r != nil && err == nil {
					err = fmt.Errorf("PublicHTTP pattern %q: %v", p, r)
				}
			}()
			mux.Handle(p, http.NotFoundHandler())
		}()
	}
	return err
}

func nonNegativeRate(field string, v float64) error {
	if v < 0 {
		return fmt.Errorf("%s %v must not be negative", field, v)
	}
	return nil
}

// withDefaults fills zero fields; call it after Validate.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.HistoryWindow == 0 {
		c.HistoryWindow = DefaultHistoryWindow
	}
	if c.HistoryPoints == 0 {
		c.HistoryPoints = DefaultHistoryPoints
	}
	if c.HistoryWorkers == 0 {
		c.HistoryWorkers = DefaultHistoryWorkers
	}
	if c.HistoryTimeout == 0 {
		c.HistoryTimeout = DefaultHistoryTimeout
	}
	if c.HistoryRequestInterval == 0 {
		c.HistoryRequestInterval = DefaultHistoryRequestInterval
	}
	if c.HistoryRequestBurst == 0 {
		c.HistoryRequestBurst = DefaultHistoryRequestBurst
	}
	if c.MaxReplaySnapshots == 0 {
		c.MaxReplaySnapshots = DefaultMaxReplaySnapshots
	}
	if c.MaxHistoryScopes == 0 {
		c.MaxHistoryScopes = DefaultMaxHistoryScopes
	}
	if c.MaxHistoryPendingBytes == 0 {
		c.MaxHistoryPendingBytes = DefaultMaxHistoryPendingBytes
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = DefaultStaleAfter
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	service.Default(&c.FollowGrace, DefaultFollowGrace)
	service.Default(&c.MaxConns, DefaultMaxConns)
	service.Default(&c.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	service.Default(&c.UpgradesPerSecond, DefaultUpgradesPerSecond)
	service.Default(&c.UpgradeBurst, DefaultUpgradeBurst)
	service.Default(&c.RESTRequestsPerSecond, DefaultRESTRequestsPerSecond)
	service.Default(&c.RESTBurst, DefaultRESTBurst)
	service.Default(&c.LookupsPerSecond, DefaultLookupsPerSecond)
	service.Default(&c.LookupBurst, DefaultLookupBurst)
	service.Default(&c.MaxHandshakes, DefaultMaxHandshakes)
	service.Default(&c.MaxHandshakesPerAddr, DefaultMaxHandshakesPerAddr)
	service.Default(&c.MemoryReleaseUpgrades, DefaultMemoryReleaseUpgrades)
	// Far beyond any useful setting ("never"), and safe from overflow in
	// the scheduler's nanosecond arithmetic.
	for _, d := range []*time.Duration{&c.HeartbeatInterval, &c.PingInterval, &c.IdleTimeout, &c.WriteTimeout, &c.HistoryRequestInterval, &c.StaleAfter} {
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

	reg        registry
	poller     *poller
	shards     []*shard
	nextShard  atomic.Uint32
	js         jetstream.JetStream
	hist       *historyServer
	pool       *workPool
	beat       heartbeatCache
	scopes     *scopeTable
	histScopes historyScopes
	limits     *limits
	origins    originPolicy
	interest   interestAnnouncer
	follow     *follower

	lastSnapWall atomic.Int64 // Config.Now() in Unix ns when the last cluster snapshot arrived

	httpLn   *chanListener
	httpSrv  *http.Server
	upgrader ws.Upgrader
	// frameTooBig is the 1009 close frame naming MaxMessageBytes.
	frameTooBig []byte

	lookups   chan struct{} // bounds concurrent scope lookups in JetStream
	hsCtx     context.Context
	hsCancel  context.CancelFunc // ends handshakes' lookups at shutdown
	hsSem     chan struct{}      // bounds concurrent handshakes
	hsWG      sync.WaitGroup
	upgradeWG sync.WaitGroup // WebSocket upgrades through the HTTP server
	relays    sync.WaitGroup // TLS relay goroutines
	hsMu      sync.Mutex
	hsConns   map[net.Conn]struct{} // handshakes in flight, closed on shutdown
	running   atomic.Bool           // serving and not shutting down
	draining  atomic.Bool           // shutdown started: no new connections
	rel       releaseState          // upgrades since memory was last returned

	life        service.Lifecycle
	mu          sync.Mutex      // guards graceCtx
	graceCtx    context.Context // the first Shutdown's
	lnClosed    chan struct{}   // closed with the listener
	closeLnOnce sync.Once
}

// New validates cfg, applies defaults and opens the listener (so Addr works
// before Run). A New that is not followed by Run must be followed by
// Shutdown to release the listener.
func New(cfg Config) (*Edge, error) {
	if cfg.NATS == nil {
		return nil, errors.New("new edge: Config.NATS is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new edge: %w", err)
	}
	cfg = cfg.withDefaults()
	origins, _ := newOriginPolicy(cfg.AllowedOrigins, cfg.AnyOrigin) // validated
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("new edge: create JetStream context: %w", err)
	}
	e := &Edge{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "edge"),
		base:     time.Now(),
		js:       js,
		scopes:   newScopeTable(),
		interest: newInterestAnnouncer(),
		follow:   newFollower(cfg.NATS, cfg.FollowGrace),
		lookups:  make(chan struct{}, cfg.HistoryWorkers),
		hsSem:    make(chan struct{}, cfg.MaxHandshakes),
		origins:  origins,
		upgrader: ws.Upgrader{Protocol: isBearerProtocol},
		hsConns:  make(map[net.Conn]struct{}),
		lnClosed: make(chan struct{}),
	}
	e.limits = newLimits(&e.cfg)
	e.hsCtx, e.hsCancel = context.WithCancel(context.Background())
	e.frameTooBig = closeFrame(ws.StatusMessageTooBig, fmt.Sprintf("message larger than %d bytes", cfg.MaxMessageBytes))
	e.pool = newWorkPool(e, cfg.HistoryWorkers)
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
	e.hist = newHistoryServer(&e.cfg, js, e.log, m.historyLoadErrors)
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
// a cluster snapshot within the last 5 seconds; if not, reason says why
// (/readyz answers it).
func (e *Edge) Ready() (reason string, ok bool) {
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
		since := ""
		if sf := e.scopes.cluster.latest.Load(); sf != nil {
			since = "; data stale since " + sf.snap.Time.UTC().Format(time.RFC3339)
		}
		return fmt.Sprintf("last cluster snapshot arrived %s ago%s", age.Round(time.Millisecond), since), false
	}
	return "ready", true
}

// mono is the scheduling clock: monotonic nanoseconds since New.
func (e *Edge) mono() int64 { return int64(time.Since(e.base)) }

// Run serves until ctx ends or Shutdown is called, then closes every
// connection gracefully (bounded by Shutdown's context, or 5 s when ctx
// ended) and returns once every goroutine it started has exited.
func (e *Edge) Run(ctx context.Context) error {
	ctx, err := e.life.Start(ctx)
	if err != nil {
		return err
	}
	defer e.life.Exit()

	p, err := newPoller(e)
	if err != nil {
		e.closeListener()
		return fmt.Errorf("start edge: %w", err)
	}
	e.poller = p
	if err := e.follow.start(); err != nil {
		p.close()
		e.closeListener()
		return fmt.Errorf("start edge: %w", err)
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
	goJoin(func() { e.intake(e.follow.msgs, workersStop) })
	goJoin(func() { e.hist.loadLoop(histCtx) })
	goJoin(func() { e.followLoop(workersStop) })
	goJoin(func() { e.releaseLoop(workersStop) })
	for range e.cfg.HistoryWorkers {
		goJoin(func() { e.pool.run(histCtx, workersStop) })
	}
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

	<-ctx.Done() // ctx or Shutdown
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
	e.relays.Wait() // bounded: each ends within lingerTimeout of its close
	// 3. Stop the workers.
	cancelHist()
	close(workersStop)
	p.stop()
	wg.Wait()
	// After the follow loop, which owns the instance subscriptions, exited.
	if err := e.follow.closeAll(); err != nil {
		e.log.Debug("unsubscribe snapshots", "err", err)
	}
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
	if e.graceCtx == nil {
		e.graceCtx = ctx
	}
	e.mu.Unlock()
	if !e.life.Stop() {
		e.closeListener()
		return nil
	}
	if err := e.life.Wait(ctx); err != nil {
		return fmt.Errorf("shut down edge: %w", err)
	}
	return nil
}

func (e *Edge) closeListener() {
	e.closeLnOnce.Do(func() {
		e.hsCancel()
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
	for _, c := range e.reg.seal() {
		c.startClose(frameCloseShutdown, reasonShutdown, closeWait)
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
			kind := subjectKind(m.Subject)
			e.m.snapshotMsgs[kind].Inc()
			if kind == proto.ScopeInstance && !m.Sub.IsValid() {
				// Queued before its instance was unfollowed (follow.go):
				// it would bring back the state just forgotten.
				continue
			}
			e.acceptSnapshot(m.Data)
		}
	}
}

// subjectKind is the scope kind of a snapshot subject, read from the
// first letter after the prefix (the subscriptions admit only the three).
func subjectKind(subject string) proto.ScopeKind {
	if len(subject) > len(proto.SnapshotSubjectPrefix)+1 {
		switch subject[len(proto.SnapshotSubjectPrefix)+1] {
		case 'r':
			return proto.ScopeRegion
		case 'i':
			return proto.ScopeInstance
		}
	}
	return proto.ScopeCluster
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
	if s.FromFuture(e.cfg.Now()) {
		// Held as the scope's latest, it would shadow every real snapshot
		// until its time came.
		e.m.snapshotsFuture.Inc()
		e.log.Debug("drop snapshot dated in the future", "scope", s.Scope.String(), "time", s.Time, "max_skew", proto.MaxSnapshotSkew)
		return
	}
	_, ok, first := e.scopes.store(s)
	if !ok {
		e.m.snapshotsStale.Inc()
		return
	}
	e.m.snapshotsAccepted.Inc()
	// After the scope's latest: a ring never holds a snapshot newer than
	// the one live delivery sends, so a replay cannot run ahead of it.
	e.hist.add(s)
	if s.Scope.Kind == proto.ScopeCluster {
		e.lastSnapWall.Store(e.cfg.Now().UnixNano())
	}
	if first {
		// Connections that arrived before their scope's first snapshot
		// wait in their shard.
		for _, sh := range e.shards {
			sh.wake()
		}
	}
}

// latest returns the newest snapshot held for scope.
func (e *Edge) latest(scope proto.Scope) (proto.Snapshot, bool) {
	st := e.scopes.get(scope)
	if st == nil {
		return proto.Snapshot{}, false
	}
	sf := st.latest.Load()
	if sf == nil {
		return proto.Snapshot{}, false
	}
	return sf.snap, true
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
	// snapshotQueue is the NATS delivery buffer shared by every snapshot
	// subscription: room for a second's burst of a few thousand followed
	// instances. Snapshots are state, so dropping on overflow (NATS slow
	// consumer, counted and logged by the follow loop) only loses stale
	// ones.
	snapshotQueue = 4096
	// scopeTTL forgets region/instance scopes that stopped publishing.
	scopeTTL = 10 * time.Minute
)
