package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/collector"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for zero Config fields.
const (
	DefaultListen          = ":8080"
	DefaultNamespace       = "meridian"
	DefaultUpstreamTimeout = 30 * time.Second
	DefaultDrainTimeout    = 10 * time.Second
	DefaultPublishInterval = collector.DefaultInterval
)

// forcedGrace is how long Shutdown waits, after its deadline has passed and
// it has cancelled the remaining requests, for their handlers to record them,
// and then again for the final report to reach the NATS server. Cancelled
// proxy requests return within milliseconds; the bound only guards against a
// handler that ignores its context or an unresponsive NATS server.
const forcedGrace = time.Second

var (
	// ErrClosed is returned by Run once Shutdown has been called.
	ErrClosed = service.ErrClosed
	// ErrRunning is returned by Run when the node is already running.
	ErrRunning = service.ErrRunning
)

// Config configures a Node. Zero fields take the documented defaults.
type Config struct {
	// Upstream is where requests are proxied: scheme and host, optionally a
	// base path that request paths are joined to. Required.
	Upstream *url.URL
	// Listen is the address New listens on. Default DefaultListen.
	Listen string
	// Listener, if set, is served instead of listening on Listen (tests pass
	// a 127.0.0.1:0 listener). The Node takes ownership and closes it.
	Listener net.Listener
	// Region and Instance name this gateway instance in reports; both are
	// required and must pass proto.ValidateToken.
	Region   string
	Instance string
	// NATS is the connection reports are published on. Required; the Node
	// does not close it.
	NATS *nats.Conn
	// PublishInterval is the time between reports. Default
	// DefaultPublishInterval (1s).
	PublishInterval time.Duration
	// Registerer receives the node's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Namespace prefixes metric names. Default DefaultNamespace.
	Namespace string
	// Logger receives the node's log. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for report times. Default time.Now. Request durations
	// always use the monotonic clock.
	Now func() time.Time
	// UpstreamTimeout bounds connecting to the upstream and waiting for its
	// response headers; exceeding it answers 504. Streaming a response body
	// is not bounded. Default DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// DrainTimeout bounds the graceful shutdown Run performs when its
	// context ends. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
}

// Node is one gateway instance. Build it with New, serve with Run, stop with
// Shutdown.
type Node struct {
	cfg       Config
	log       *slog.Logger
	rec       *Recorder
	metrics   *metrics
	pub       *collector.Publisher
	transport *http.Transport
	srv       *http.Server
	mwHandler http.Handler // Middleware around the reverse proxy

	// baseCtx is the parent of every request context; cancelling it aborts
	// all in-flight requests when the drain runs out of time.
	baseCtx    context.Context
	cancelBase context.CancelCauseFunc

	// draining is set once Shutdown waits for in-flight requests; from then
	// on a request that brings the in-flight count to zero signals drained.
	draining atomic.Bool
	drained  chan struct{}

	serving chan struct{} // closed when Run serves
	ln      net.Listener  // bound by New

	// The gateway keeps its own run state rather than service.Lifecycle:
	// its Shutdown drains requests itself, bounded by the caller's context,
	// and Run waits for that Shutdown instead of the other way round.
	mu        sync.Mutex
	state     nodeState
	stopPub   func() // cancels the publisher's Run and waits for it
	serveDone chan struct{}

	shutdownStarted chan struct{}
	shutdownDone    chan struct{}
	shutdownErr     error
}

type nodeState uint8

const (
	stateNew nodeState = iota
	stateRunning
	stateClosed
)

// Validate reports the first value in cfg that no default repairs. (New
// also checks that NATS is set.)
func (c Config) Validate() error {
	if c.Upstream == nil {
		return errors.New("Upstream is required")
	}
	if c.Upstream.Scheme != "http" && c.Upstream.Scheme != "https" || c.Upstream.Host == "" {
		return fmt.Errorf("upstream %q must be an absolute http or https URL", c.Upstream.Redacted())
	}
	return service.First(
		proto.ValidateToken("region", c.Region),
		proto.ValidateToken("instance", c.Instance),
		service.NonNegative("PublishInterval", c.PublishInterval),
		service.NonNegative("UpstreamTimeout", c.UpstreamTimeout),
		service.NonNegative("DrainTimeout", c.DrainTimeout),
	)
}

// withDefaults fills zero fields; call it after Validate.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = DefaultPublishInterval
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
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	return c
}

// New validates cfg, builds a Node and listens on cfg.Listen (unless
// cfg.Listener is set), so that Addr works at once and a taken port fails
// here, before anything serves. It registers the node's metrics on
// cfg.Registerer. A New not followed by Run must be followed by Shutdown to
// release the listener.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	if cfg.NATS == nil {
		return nil, errors.New("new gateway: NATS connection is required")
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("component", "gateway", "region", cfg.Region, "instance", cfg.Instance)

	n := &Node{
		cfg:             cfg,
		log:             log,
		rec:             new(Recorder),
		transport:       newTransport(cfg.UpstreamTimeout),
		drained:         make(chan struct{}, 1),
		serving:         make(chan struct{}),
		shutdownStarted: make(chan struct{}),
		shutdownDone:    make(chan struct{}),
	}
	n.metrics = newMetrics(cfg.Namespace, n.rec)
	pub, err := collector.New(collector.Config{
		NATS:      cfg.NATS,
		Region:    cfg.Region,
		Instance:  cfg.Instance,
		Source:    n.rec.Counters,
		Interval:  cfg.PublishInterval,
		Now:       cfg.Now,
		Logger:    cfg.Logger,
		OnPublish: n.metrics.onPublish,
	})
	if err != nil {
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	n.pub = pub
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(n.metrics); err != nil {
			return nil, fmt.Errorf("new gateway: register metrics: %w", err)
		}
	}

	n.baseCtx, n.cancelBase = context.WithCancelCause(context.Background())
	proxy := newReverseProxy(cfg.Upstream, n.transport, log)
	n.srv = &http.Server{
		Handler:           http.HandlerFunc(n.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return n.baseCtx },
	}
	n.mwHandler = Middleware(n.rec, proxy)
	n.ln = cfg.Listener
	if n.ln == nil {
		if n.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			if cfg.Registerer != nil {
				cfg.Registerer.Unregister(n.metrics)
			}
			return nil, fmt.Errorf("new gateway: listen on %s: %w", cfg.Listen, err)
		}
	}
	return n, nil
}

// serveHTTP is the server's handler: the metered proxy, plus the drain
// signal. The deferred signal runs after Middleware has recorded the request,
// on panics too.
func (n *Node) serveHTTP(w http.ResponseWriter, r *http.Request) {
	defer n.noteDone()
	n.mwHandler.ServeHTTP(w, r)
}

func (n *Node) noteDone() {
	// Ordering: Shutdown sets draining and then reads Active; a request
	// lowers Active (in Recorder.End) and then reads draining. With
	// sequentially consistent atomics at least one of them sees the other's
	// write, so the last request cannot slip past the waiting Shutdown.
	if n.draining.Load() && n.rec.Active() == 0 {
		select {
		case n.drained <- struct{}{}:
		default:
		}
	}
}

// Run serves the proxy on the listener New opened and publishes reports until ctx ends or Shutdown is called. When ctx ends, Run shuts the
// node down gracefully itself, bounded by DrainTimeout, and returns that
// shutdown's error. When Shutdown is called, Run returns nil once Shutdown
// has finished. If serving fails, Run shuts down and returns the error.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	switch n.state {
	case stateRunning:
		n.mu.Unlock()
		return ErrRunning
	case stateClosed:
		n.mu.Unlock()
		return ErrClosed
	}
	ln := n.ln
	n.state = stateRunning

	pubCtx, cancelPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		_ = n.pub.Run(pubCtx) // only fails with ErrRunning, impossible here
	}()
	n.stopPub = func() { cancelPub(); <-pubDone }

	serveErr := make(chan error, 1)
	n.serveDone = make(chan struct{})
	go func() {
		defer close(n.serveDone)
		serveErr <- n.srv.Serve(ln)
	}()
	n.mu.Unlock()
	close(n.serving)
	n.log.Info("gateway serving", "addr", ln.Addr().String(), "upstream", n.cfg.Upstream.Redacted(),
		"boot_id", n.pub.BootID())

	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.DrainTimeout)
		defer cancel()
		return n.Shutdown(sctx)
	case <-n.shutdownStarted:
		<-n.shutdownDone
		return nil
	case err := <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			// Shutdown closed the server; its start and Serve's return
			// raced into this select.
			<-n.shutdownDone
			return nil
		}
		n.log.Error("gateway stopped serving", "err", err)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.DrainTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("serve: %w", err), n.Shutdown(sctx))
	}
}

// Ready reports whether the node serves and its NATS connection is up; if
// not, reason says why.
func (n *Node) Ready() (reason string, ok bool) {
	select {
	case <-n.shutdownStarted:
		return "gateway is shutting down", false
	default:
	}
	select {
	case <-n.serving:
	default:
		return "gateway is not serving yet", false
	}
	if !n.cfg.NATS.IsConnected() {
		return "not connected to NATS (" + n.cfg.NATS.Status().String() + ")", false
	}
	return "ready", true
}

// Addr is the address the node listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// BootID identifies this boot in the node's reports.
func (n *Node) BootID() string { return n.pub.BootID() }

// Counters reads the node's counters, as its next report would carry them.
func (n *Node) Counters() proto.Counters { return n.rec.Counters() }

// Shutdown stops the node gracefully: it stops accepting connections, waits
// for in-flight requests (upgraded connections included) to finish, stops the
// periodic reports and publishes the final report with the exact totals, then
// returns. If ctx ends before the requests have drained, the remaining ones
// are cancelled (recorded as 503, or 499 if they had started responding),
// the final report is still published, and Shutdown returns an error wrapping
// ctx's error.
//
// Shutdown is idempotent and safe to call concurrently, before, during or
// after Run; later calls wait for the first to finish (or for their own ctx)
// and return its result. Called before Run, it only releases the node: Run
// then returns ErrClosed and no report is published.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	prev := n.state
	first := false
	select {
	case <-n.shutdownStarted:
	default:
		first = true
		close(n.shutdownStarted)
	}
	n.state = stateClosed
	n.mu.Unlock()

	if !first {
		select {
		case <-n.shutdownDone:
			return n.shutdownErr
		case <-ctx.Done():
			return fmt.Errorf("shut down gateway: %w", ctx.Err())
		}
	}
	if prev == stateRunning {
		n.shutdownErr = n.shutdown(ctx)
	} else {
		_ = n.ln.Close()
	}
	n.cancelBase(ErrClosed)
	close(n.shutdownDone)
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	var errs []error
	drainErr := n.srv.Shutdown(ctx)
	if drainErr == nil {
		drainErr = n.waitIdle(ctx)
	}
	if drainErr != nil {
		n.log.Warn("drain timed out; cancelling in-flight requests", "in_flight", n.rec.Active())
		n.cancelBase(errForcedShutdown)
		_ = n.srv.Close()
		gctx, cancel := context.WithTimeout(context.Background(), forcedGrace)
		_ = n.waitIdle(gctx)
		cancel()
		errs = append(errs, fmt.Errorf("drain requests: %w", drainErr))
	}
	<-n.serveDone
	n.transport.CloseIdleConnections()

	n.stopPub()
	// The final report matters most after a forced drain, when ctx has
	// already ended: give its round trip to the server a moment of its own.
	flushCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		flushCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), forcedGrace)
		defer cancel()
	}
	if err := n.pub.Flush(flushCtx); err != nil {
		errs = append(errs, fmt.Errorf("publish final report: %w", err))
	}
	c := n.rec.Counters()
	n.log.Info("gateway stopped", "requests_total", c.RequestsTotal, "requests_error", c.RequestsError,
		"in_flight", c.ActiveConnections)
	if len(errs) > 0 {
		return fmt.Errorf("shut down gateway: %w", errors.Join(errs...))
	}
	return nil
}

// waitIdle waits until no request is in flight. http.Server.Shutdown does not
// wait for hijacked connections, such as proxied WebSocket upgrades; their
// handlers are still running and counted in the Recorder.
func (n *Node) waitIdle(ctx context.Context) error {
	n.draining.Store(true)
	for n.rec.Active() > 0 {
		select {
		case <-n.drained:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
