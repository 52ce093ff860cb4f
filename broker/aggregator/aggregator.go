package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults and fixed timings of the Aggregator.
const (
	DefaultNamespace = "meridian"
	DefaultExportTTL = 5 * time.Minute

	// ackTimeout bounds how long an unacknowledged history write stays
	// pending before it counts as an error: a stored 300-byte snapshot is
	// acknowledged in milliseconds, and ticks come every second.
	ackTimeout = 2 * time.Second
	// stallWait is how long a publish may wait for room among pending acks
	// before the rest of the tick goes out without acks (back-pressure).
	stallWait = 20 * time.Millisecond
	// flushWait bounds how long Run waits for the last acks when it stops.
	flushWait = time.Second
	// ensureTimeout bounds one attempt to create or update the stream;
	// attempts back off from ensureBackoffMin to ensureBackoffMax.
	ensureTimeout    = 5 * time.Second
	ensureBackoffMin = time.Second
	ensureBackoffMax = 30 * time.Second
	// logEvery rate-limits repetitive warnings (bad reports, write errors).
	logEvery = 10 * time.Second
)

var (
	// ErrClosed is returned by Run after Shutdown.
	ErrClosed = errors.New("aggregator is shut down")
	// ErrRunning is returned by a second concurrent Run.
	ErrRunning = errors.New("aggregator is already running")
)

// Config configures an Aggregator. Zero fields take the documented defaults.
type Config struct {
	// NATS is the connection reports are read from and snapshots published
	// on. Required. The aggregator does not close it.
	NATS *nats.Conn
	// History configures the history stream, created or updated at start.
	History history.StreamConfig
	// StaleAfter, AvgWindow and ForgetAfter configure the merge; see
	// MergerConfig for their meaning and defaults.
	StaleAfter  time.Duration
	AvgWindow   time.Duration
	ForgetAfter time.Duration
	// Registerer receives the aggregator's own metrics; nil registers none.
	// The per-gateway series are served separately by GatewayHandler.
	Registerer prometheus.Registerer
	// Namespace prefixes every metric name. Default "meridian".
	Namespace string
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for report receipt, staleness and snapshot times.
	// Default time.Now.
	Now func() time.Time
	// ExportTTL is how long an instance's series stay on GatewayHandler
	// after its last report. Default 5m.
	ExportTTL time.Duration
}

type runState uint8

const (
	stateNew runState = iota
	stateRunning
	stateClosed
)

// Aggregator merges gateway reports from NATS and publishes one snapshot per
// scope every wall-clock second. Its methods are safe for concurrent use.
type Aggregator struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream
	metrics  *metrics
	gateways *gatewayCollector
	gwHTTP   http.Handler

	mu     sync.Mutex // guards merger; held only to apply a report or copy snapshots out
	merger *Merger

	leader      atomic.Bool
	streamReady atomic.Bool
	recheck     chan struct{} // capacity 1: asks the stream loop to ensure the stream again

	decodeLog  logLimiter
	publishLog logLimiter

	life   sync.Mutex // guards state and cancel
	state  runState
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returns

	snaps []proto.Snapshot // the tick goroutine's reused buffer
}

// New validates cfg and builds an Aggregator; Run starts it. It starts as
// the leader (publishing); see SetLeader.
func New(cfg Config) (*Aggregator, error) {
	if cfg.NATS == nil {
		return nil, errors.New("new aggregator: Config.NATS is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ExportTTL <= 0 {
		cfg.ExportTTL = DefaultExportTTL
	}
	a := &Aggregator{
		cfg: cfg,
		log: cfg.Logger.With("component", "aggregator"),
		merger: NewMerger(MergerConfig{
			StaleAfter: cfg.StaleAfter, AvgWindow: cfg.AvgWindow, ForgetAfter: cfg.ForgetAfter,
		}),
		recheck:    make(chan struct{}, 1),
		decodeLog:  logLimiter{every: logEvery},
		publishLog: logLimiter{every: logEvery},
		done:       make(chan struct{}),
	}
	a.leader.Store(true)
	js, err := jetstream.New(cfg.NATS,
		jetstream.WithPublishAsyncErrHandler(a.onWriteError),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("new aggregator: jetstream context: %w", err)
	}
	a.js = js
	a.metrics = newMetrics(cfg.Namespace, a)
	if cfg.Registerer != nil {
		if err := a.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("new aggregator: %w", err)
		}
	}
	a.gateways = newGatewayCollector(cfg.Namespace, &a.mu, a.merger, cfg.Now, cfg.ExportTTL)
	reg := prometheus.NewRegistry()
	if err := reg.Register(a.gateways); err != nil {
		return nil, fmt.Errorf("new aggregator: register gateway collector: %w", err)
	}
	a.gwHTTP = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return a, nil
}

// GatewayCollector returns the collector of per-gateway series (see
// exporter.go), for callers that serve it from a registry of their own.
func (a *Aggregator) GatewayCollector() prometheus.Collector { return a.gateways }

// GatewayHandler serves the per-gateway series from a registry of their own,
// for the /metrics/gateways endpoint.
func (a *Aggregator) GatewayHandler() http.Handler { return a.gwHTTP }

// SetLeader switches publishing on or off. A follower keeps merging reports
// and ticking, so that it can take over with warm state and windows; only the
// leader publishes snapshots.
func (a *Aggregator) SetLeader(leader bool) {
	if a.leader.Swap(leader) != leader {
		a.log.Info("leadership changed", "leader", leader)
	}
}

// Leader reports whether this aggregator publishes snapshots.
func (a *Aggregator) Leader() bool { return a.leader.Load() }

// State returns a copy of the merge state (see Merger.State).
func (a *Aggregator) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.merger.State()
}

// Restore replaces the merge state (see Merger.Restore).
func (a *Aggregator) Restore(s State) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.merger.Restore(s)
}

// Run subscribes to reports, keeps the history stream in place and ticks
// every wall-clock second until ctx ends or Shutdown is called; then it
// unsubscribes, waits briefly for outstanding history acks and returns nil.
// A JetStream outage is not an error: snapshots still reach live subscribers,
// failed history writes are counted, and the stream is ensured again with
// backoff. Run returns an error only if it cannot subscribe, or with
// ErrClosed or ErrRunning.
func (a *Aggregator) Run(ctx context.Context) error {
	a.life.Lock()
	switch a.state {
	case stateClosed:
		a.life.Unlock()
		return ErrClosed
	case stateRunning:
		a.life.Unlock()
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	a.state = stateRunning
	a.life.Unlock()
	defer func() {
		cancel()
		a.life.Lock()
		a.state = stateClosed
		a.life.Unlock()
		close(a.done)
	}()

	sub, err := a.cfg.NATS.Subscribe(proto.ReportSubjectAll, a.onReport)
	if err != nil {
		return fmt.Errorf("subscribe to reports: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.streamLoop(ctx) })
	a.tickLoop(ctx)

	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		a.log.Warn("unsubscribe from reports", "err", err)
	}
	wg.Wait()
	wait := time.NewTimer(flushWait)
	select {
	case <-a.js.PublishAsyncComplete():
	case <-wait.C:
	}
	wait.Stop()
	// Drops the ack subscription and its status listener goroutine; the
	// connection is the caller's and stays open.
	a.js.CleanupPublisher()
	return nil
}

// Shutdown stops Run and waits for it to return, or for ctx to end. It is
// idempotent; after it, Run returns ErrClosed.
func (a *Aggregator) Shutdown(ctx context.Context) error {
	a.life.Lock()
	started := a.cancel != nil // Run got as far as starting
	a.state = stateClosed
	if a.cancel != nil {
		a.cancel()
	}
	a.life.Unlock()
	if !started {
		return nil
	}
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down aggregator: %w", ctx.Err())
	}
}

// onReport runs on the subscription's delivery goroutine. The report's body
// is authoritative; its subject only routes it. Should this subscription
// ever fall behind and NATS drop reports for it, nothing is lost: the next
// report of each instance carries its cumulative counters.
func (a *Aggregator) onReport(msg *nats.Msg) {
	a.metrics.received.Inc()
	r, err := proto.DecodeReport(msg.Data)
	if err != nil {
		a.metrics.decodeErrors.Inc()
		if ok, suppressed := a.decodeLog.allow(a.cfg.Now()); ok {
			a.log.Warn("drop undecodable report", "subject", msg.Subject, "err", err, "suppressed", suppressed)
		}
		return
	}
	now := a.cfg.Now()
	a.mu.Lock()
	out := a.merger.Apply(r, now)
	a.mu.Unlock()
	switch out {
	case OutcomeDuplicate:
		a.metrics.duplicates.Inc()
	case OutcomeResetBoot:
		a.metrics.resetBoot.Inc()
		a.log.Debug("gateway restarted", "instance", r.Instance, "region", r.Region, "boot_id", r.BootID)
	case OutcomeResetDecrease:
		a.metrics.resetDecrease.Inc()
		a.log.Debug("gateway counters went down without a restart", "instance", r.Instance, "boot_id", r.BootID, "seq", r.Seq)
	case OutcomeRejected:
		a.metrics.rejected.Inc()
		if ok, suppressed := a.decodeLog.allow(now); ok {
			a.log.Warn("reject report whose counts would overflow the cluster's", "instance", r.Instance, "suppressed", suppressed)
		}
	case OutcomeNewInstance:
		a.log.Debug("new gateway instance", "instance", r.Instance, "region", r.Region)
	}
}

// tickLoop ticks on every wall-clock second boundary. The timer is re-armed
// for the next boundary after each tick, so ticks never drift; a tick that
// overruns its second skips the boundaries it missed instead of bunching.
func (a *Aggregator) tickLoop(ctx context.Context) {
	timer := time.NewTimer(a.untilNextSecond())
	defer timer.Stop()
	last := int64(-1 << 63)
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := a.cfg.Now()
		if sec := now.Unix(); sec != last {
			last = sec
			a.tick(ctx, now)
		}
		timer.Reset(a.untilNextSecond())
	}
}

func (a *Aggregator) untilNextSecond() time.Duration {
	now := a.cfg.Now()
	if d := now.Truncate(time.Second).Add(time.Second).Sub(now); d > 0 {
		return d
	}
	return time.Second
}

func (a *Aggregator) tick(ctx context.Context, now time.Time) {
	a.mu.Lock()
	a.snaps = a.merger.AppendSnapshots(a.snaps[:0], now)
	a.mu.Unlock()
	a.metrics.ticks.Inc()
	if a.leader.Load() {
		a.publish(ctx, a.snaps)
	}
}

// publish sends one tick's snapshots. Each goes out with JetStream so the
// history stream acknowledges it, with a message id of scope and second so
// that a re-publish of the same second is stored once; live subscribers get
// it either way. No retries: a no-responders retry would deliver the
// snapshot to live subscribers twice. When acks back up, the rest of the
// tick goes out as plain NATS messages (the stream still captures and
// dedupes them, but unacknowledged) so live data never waits for history.
func (a *Aggregator) publish(ctx context.Context, snaps []proto.Snapshot) {
	start := time.Now()
	backedUp := false
	for i := range snaps {
		s := &snaps[i]
		data, err := s.Encode()
		if err != nil {
			a.writeFailed(fmt.Errorf("encode snapshot %s: %w", s.Scope, err))
			continue
		}
		subject := proto.SnapshotSubject(s.Scope)
		id := s.Scope.String() + "@" + strconv.FormatInt(s.Time.Unix(), 10)
		if !backedUp {
			_, err = a.js.PublishAsync(subject, data,
				jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0), jetstream.WithStallWait(stallWait))
			if err == nil {
				a.metrics.published.Inc()
				continue
			}
			backedUp = errors.Is(err, jetstream.ErrTooManyStalledMsgs)
			if !backedUp {
				a.writeFailed(fmt.Errorf("publish snapshot %s: %w", s.Scope, err))
				continue
			}
		}
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		err = a.cfg.NATS.PublishMsg(msg)
		a.writeFailed(fmt.Errorf("publish snapshot %s: history acks backed up: %w", s.Scope, jetstream.ErrTooManyStalledMsgs))
		if err == nil {
			a.metrics.published.Inc()
		}
	}
	// Wait for the acks, but never past the next tick.
	wait := time.NewTimer(a.untilNextSecond())
	defer wait.Stop()
	select {
	case <-a.js.PublishAsyncComplete():
	case <-wait.C:
	case <-ctx.Done():
		return
	}
	a.metrics.publishTime.Observe(time.Since(start).Seconds())
}

// onWriteError is JetStream's callback for a failed or timed-out history
// write. Any failure asks the stream loop to ensure the stream again: a
// deleted stream shows as "no responders" only while nothing else listens on
// the subject, and as ack timeouts once edges subscribe, so the error alone
// cannot tell. Ensuring an existing stream is one cheap request, and the
// loop spaces attempts.
func (a *Aggregator) onWriteError(_ jetstream.JetStream, msg *nats.Msg, err error) {
	select {
	case a.recheck <- struct{}{}:
	default:
	}
	a.writeFailed(fmt.Errorf("write snapshot to history on %s: %w", msg.Subject, err))
}

func (a *Aggregator) writeFailed(err error) {
	a.metrics.historyErrors.Inc()
	if ok, suppressed := a.publishLog.allow(a.cfg.Now()); ok {
		a.log.Warn("history write failed", "err", err, "suppressed", suppressed)
	}
}

// streamLoop creates or updates the history stream, retrying with backoff
// until it succeeds, and again whenever a write finds no stream.
func (a *Aggregator) streamLoop(ctx context.Context) {
	backoff := ensureBackoffMin
	for {
		actx, cancel := context.WithTimeout(ctx, ensureTimeout)
		_, err := history.EnsureStream(actx, a.js, a.cfg.History)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var wait <-chan time.Time
		if err == nil {
			if !a.streamReady.Swap(true) {
				a.log.Info("history stream ready", "stream", proto.HistoryStream)
			}
			backoff = ensureBackoffMin
			select {
			case <-a.recheck:
			case <-ctx.Done():
				return
			}
			// Let the rest of the failing tick drain before trying again.
			wait = time.After(ensureBackoffMin)
		} else {
			a.streamReady.Store(false)
			a.log.Warn("ensure history stream; retrying", "err", err, "in", backoff)
			wait = time.After(backoff)
			backoff = min(2*backoff, ensureBackoffMax)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return
		}
	}
}

// logLimiter lets one log line through per period and counts the rest.
type logLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed
// since the last one.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every && now.Sub(l.last) >= 0 {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}
