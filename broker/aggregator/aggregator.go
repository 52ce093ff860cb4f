package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults and fixed timings of the Aggregator.
const (
	DefaultNamespace = "meridian"
	DefaultExportTTL = 5 * time.Minute
	// DefaultStateReplicas is the replication factor of the lease and state
	// buckets on a single NATS node.
	DefaultStateReplicas = 1

	// ackTimeout bounds how long an unacknowledged history write stays
	// pending before it counts as an error: a stored 300-byte snapshot is
	// acknowledged in milliseconds, and ticks come every second.
	ackTimeout = 2 * time.Second
	// stallWait is how long a publish may wait for room among pending acks
	// before the rest of the tick goes out without acks (back-pressure).
	stallWait = 20 * time.Millisecond
	// flushWait bounds how long Run waits for the last acks when it stops.
	flushWait = time.Second
	// ensureTimeout bounds one attempt to ensure one stream. A request
	// sent while a cluster elects may never be answered; ensure reads
	// before it writes, so an attempt cut short finds the stream next time.
	// Attempts back off from ensureBackoffMin to ensureBackoffMax on a
	// refusal, and stay at ensureBackoffMin while JetStream is unavailable.
	ensureTimeout    = 2 * time.Second
	ensureBackoffMin = time.Second
	ensureBackoffMax = 30 * time.Second
	// ensureRetryMax caps the spacing of attempts while JetStream is
	// unavailable for now (history.Transient): one cheap request, and
	// history must resume within seconds of the cluster electing its
	// leaders.
	ensureRetryMax = 2 * time.Second
	// logEvery rate-limits repetitive warnings (bad reports, write errors).
	logEvery = 10 * time.Second
)

var (
	// ErrClosed is returned by Run after Shutdown or a first Run.
	ErrClosed = service.ErrClosed
	// ErrRunning is returned by a second concurrent Run.
	ErrRunning = service.ErrRunning
	// ErrElection is returned by SetLeader while leadership is elected.
	ErrElection = errors.New("leadership is elected; SetLeader needs LeaderDisabled")
)

// Config configures an Aggregator. Zero fields take the documented defaults.
type Config struct {
	// NATS is the connection reports are read from and snapshots published
	// on. Required. The aggregator does not close it.
	NATS *nats.Conn
	// History configures the history stream, created or updated at start.
	History history.StreamConfig
	// Merge configures the merge (staleness, average window, forgetting).
	Merge MergerConfig
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

	// ID names this aggregator in the leader lease and in logs. Default:
	// the host name and a random suffix.
	ID string
	// Leader times the election of the one aggregator that publishes (see
	// package leader); every aggregator of a cluster must use the same TTL.
	// The aggregator sets JS, KV, Bucket, Key, Replicas, ID, Now, Logger
	// and OnChange itself; only the timings (TTL, Renew, RenewDeadline,
	// Poll) are read.
	Leader leader.Config
	// LeaderDisabled turns the election off: SetLeader decides whether this
	// aggregator publishes (it starts publishing), and the merge state is
	// neither restored nor persisted. For a single aggregator without
	// JetStream, or leadership decided elsewhere.
	LeaderDisabled bool
	// StateReplicas is the replication factor of the lease and state
	// buckets: DefaultStateReplicas (1) on a single node, 3 in a cluster.
	StateReplicas int
	// Rollups configures the stream of 1-minute rollups (see
	// history.EnsureRollupStream). The leader publishes one rollup per scope
	// and minute on proto.RollupSubject(scope), with Nats-Msg-Id
	// "<scope>@<minute unix>". MaxAge defaults to history.DefaultRollupMaxAge.
	Rollups history.StreamConfig
	// InstanceSnapshots says which instance scopes are published every
	// second: by default (InstanceSnapshotsOnDemand) only those an edge
	// follows; see interest.go.
	InstanceSnapshots InstanceSnapshots
	// RefillWindow is how much of what an aggregator publishes live-only
	// during a JetStream outage it keeps to write into the history when the
	// store recovers (refill.go): the newest RefillWindow; older seconds are
	// dropped and counted, and the history keeps their gap. Default
	// DefaultRefillWindow, at most MaxRefillWindow.
	RefillWindow time.Duration
	// RefillBytes bounds the memory of that buffer (encoded snapshots and
	// rollups). Default DefaultRefillBytes.
	RefillBytes int
	// RollupSpread is how long after its minute the instance rollups of a
	// minute are written over, paced (rollwriter.go); the cluster and region
	// rollups go out at once. Default DefaultRollupSpread.
	RollupSpread time.Duration
	// RollupMaxPending bounds the instance rollups written and not yet
	// acknowledged by the rollup stream. Default DefaultRollupMaxPending.
	RollupMaxPending int

	// Tier, Regions and ClusterDeadline shard the merge (see tier.go): the
	// zero Tier is TierAll, one aggregator tier merging every report.
	// TierRegion merges only the reports of Regions (required there,
	// refused elsewhere); TierCluster merges the region snapshots into the
	// cluster's, publishing second T once every recently seen region
	// published T, or ClusterDeadline (DefaultClusterDeadline) after T.
	Tier            Tier
	Regions         []string
	ClusterDeadline time.Duration
}

// Validate reports the first value in cfg that no default repairs. (New
// also checks that NATS is set.)
func (c Config) Validate() error {
	return service.First(
		service.In("History", c.History.Validate()),
		service.In("Merge", c.Merge.Validate()),
		service.NonNegative("ExportTTL", c.ExportTTL),
		service.NonNegative("StateReplicas", c.StateReplicas),
		service.In("Rollups", c.Rollups.Validate()),
		c.InstanceSnapshots.validate(),
		service.NonNegative("RefillWindow", c.RefillWindow),
		refillWindowCap(c.RefillWindow),
		service.NonNegative("RefillBytes", c.RefillBytes),
		service.NonNegative("RollupSpread", c.RollupSpread),
		service.NonNegative("RollupMaxPending", c.RollupMaxPending),
		c.validateTier(),
	)
}

// withDefaults fills zero fields; call it after Validate. The election's
// and streams' own defaults are applied by their packages.
func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ExportTTL == 0 {
		c.ExportTTL = DefaultExportTTL
	}
	if c.ID == "" {
		c.ID = leader.DefaultID()
	}
	if c.StateReplicas == 0 {
		c.StateReplicas = DefaultStateReplicas
	}
	if c.Rollups.MaxAge == 0 {
		c.Rollups.MaxAge = history.DefaultRollupMaxAge
	}
	service.Default(&c.RefillWindow, DefaultRefillWindow)
	service.Default(&c.RefillBytes, DefaultRefillBytes)
	service.Default(&c.RollupSpread, DefaultRollupSpread)
	service.Default(&c.RollupMaxPending, DefaultRollupMaxPending)
	return c.tierDefaults()
}

// Aggregator merges gateway reports from NATS and publishes one snapshot per
// scope every wall-clock second. Its methods are safe for concurrent use.
type Aggregator struct {
	cfg      Config
	log      *slog.Logger
	js       jetstream.JetStream
	metrics  *metrics
	gateways *gatewayCollector
	gwHTTP   http.Handler

	mu     sync.Mutex // guards merger and replay; held only to apply a report or copy snapshots and state out
	merger *Merger

	leader      atomic.Bool // LeaderDisabled: set by SetLeader
	streamReady atomic.Bool
	// streamMissing says why the streams are not ready (nil once they are);
	// Ready answers it.
	streamMissing atomic.Pointer[string]
	recheck       chan struct{} // capacity 1: asks the stream loop to ensure the streams again

	// Election (nil with LeaderDisabled). active is set by the tick
	// goroutine once it leads with the persisted state restored; replay is
	// guarded by mu.
	elector *leader.Elector
	nudge   chan struct{} // capacity 1: leadership changed, tick now
	active  atomic.Bool
	replay  *replayBuffer
	book    *book // what was published, by anyone; has its own lock

	// liveOnly and yieldUntil (Unix ns): see liveonly.go. gap holds what
	// was published live-only for the refill (refill.go).
	liveOnly   atomic.Bool
	yieldUntil atomic.Int64
	gap        *gapBuffer
	refillKick chan struct{} // capacity 1: the store works and gap holds something

	interest    *interestTable // instances the edges follow; has its own lock
	interestBad prometheus.Counter

	// The persisted state: stateMu guards stateKV and stateRev between the
	// take-over and the hand-over (Run's goroutine) and stateLoop; see
	// statewriter.go.
	stateMu   sync.Mutex
	stateKV   jetstream.KeyValue
	stateRev  uint64     // revision of the state this leader last read or wrote
	stateGen  string     // the chunk set that state names; see statechunks.go
	stateQ    chan State // capacity 1: the tick's state copy for stateLoop
	stateBusy atomic.Bool

	// Owned by the goroutine running Run.
	rolls []proto.Snapshot

	// The instance rollups' paced writer (rollwriter.go), with its own
	// JetStream context so that its pending acks never count against the
	// snapshots'.
	rollq     *rollupQueue
	rollJS    jetstream.JetStream
	rollupLog logLimiter

	// Read at scrape time.
	stateSize    atomic.Int64 // bytes of the last state written
	stateChunks  atomic.Int64 // its chunks; 0: one message
	stateWritten atomic.Int64 // unix nanoseconds of the last state write

	decodeLog  logLimiter
	rejectLog  logLimiter
	publishLog logLimiter
	stateLog   logLimiter
	refillLog  logLimiter
	// refilledLog spaces the "history refilled" lines (refill.go).
	refilledLog logLimiter

	life service.Lifecycle

	snaps []proto.Snapshot // the tick goroutine's reused buffer

	// TierCluster only (clustertier.go): the merge of the region snapshots,
	// guarded by mu, and the signal that every region published the second.
	cluster     *ClusterMerger
	regionsIn   chan struct{}
	regionSnaps *prometheus.CounterVec
}

// New validates cfg and builds an Aggregator; Run starts it. With the
// election (the default) it publishes once it holds the lease; with
// LeaderDisabled it starts as the leader (see SetLeader).
func New(cfg Config) (*Aggregator, error) {
	if cfg.NATS == nil {
		return nil, errors.New("new aggregator: Config.NATS is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new aggregator: %w", err)
	}
	cfg = cfg.withDefaults()
	a := &Aggregator{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "aggregator"),
		merger:      NewMerger(cfg.Merge),
		recheck:     make(chan struct{}, 1),
		nudge:       make(chan struct{}, 1),
		replay:      newReplayBuffer(),
		book:        newBook(),
		interest:    newInterestTable(),
		stateQ:      make(chan State, 1),
		decodeLog:   logLimiter{every: logEvery},
		rejectLog:   logLimiter{every: logEvery},
		publishLog:  logLimiter{every: logEvery},
		stateLog:    logLimiter{every: logEvery},
		refillLog:   logLimiter{every: time.Minute},
		refilledLog: logLimiter{every: time.Minute},
		gap:         newGapBuffer(cfg.RefillWindow, cfg.RefillBytes),
		refillKick:  make(chan struct{}, 1),
		rollq:       newRollupQueue(),
		rollupLog:   logLimiter{every: time.Minute},
	}
	if cfg.Tier == TierCluster {
		a.cluster = NewClusterMerger(cfg.Merge)
		a.regionsIn = make(chan struct{}, 1)
	}
	a.log = a.log.With("id", cfg.ID)
	a.leader.Store(true)
	a.book.maxRate = a.merger.cfg.MaxRequestRate
	js, err := jetstream.New(cfg.NATS,
		jetstream.WithPublishAsyncErrHandler(a.onWriteError),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("new aggregator: jetstream context: %w", err)
	}
	a.js = js
	// Errors come back on each publish's future, and the writer retries.
	a.rollJS, err = jetstream.New(cfg.NATS,
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncMaxPending(cfg.RollupMaxPending),
	)
	if err != nil {
		return nil, fmt.Errorf("new aggregator: rollup jetstream context: %w", err)
	}
	if !cfg.LeaderDisabled {
		lc := cfg.Leader
		lc.JS, lc.KV, lc.Bucket, lc.Key, lc.Replicas, lc.ID = js, nil, LeaseBucket, cfg.leaseKey(), cfg.StateReplicas, cfg.ID
		lc.Now, lc.Logger, lc.OnChange = cfg.Now, cfg.Logger, a.onLeadership
		a.elector, err = leader.New(lc)
		if err != nil {
			return nil, fmt.Errorf("new aggregator: %w", err)
		}
	}
	a.metrics = newMetrics(cfg.Namespace, a)
	if cfg.Registerer != nil {
		if err := a.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("new aggregator: %w", err)
		}
	}
	a.gateways = newGatewayCollector(cfg.Namespace, &a.mu, a.merger, cfg.Now, cfg.ExportTTL)
	a.gateways.leading = a.Leader
	reg := prometheus.NewRegistry()
	if err := reg.Register(a.gateways); err != nil {
		return nil, fmt.Errorf("new aggregator: register gateway collector: %w", err)
	}
	a.gwHTTP = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	missing := "history streams: not ensured yet"
	a.streamMissing.Store(&missing)
	return a, nil
}

// GatewayCollector returns the collector of per-gateway series (see
// exporter.go), for callers that serve it from a registry of their own.
func (a *Aggregator) GatewayCollector() prometheus.Collector { return a.gateways }

// GatewayHandler serves the per-gateway series from a registry of their own,
// for the /metrics/gateways endpoint. Only the leader serves series (see
// exporter.go); scrape every aggregator and the series follow the leader.
func (a *Aggregator) GatewayHandler() http.Handler { return a.gwHTTP }

// SetLeader switches publishing on or off when Config.LeaderDisabled is
// set, that is when something other than the built-in election decides who
// leads. A follower keeps merging reports and ticking, so that it can take
// over with warm state and windows. With the election, leadership follows
// the lease and SetLeader returns ErrElection.
func (a *Aggregator) SetLeader(leader bool) error {
	if a.elector != nil {
		return ErrElection
	}
	if a.leader.Swap(leader) != leader {
		a.log.Info("leadership changed", "leader", leader)
	}
	return nil
}

// Leader reports whether this aggregator publishes snapshots now.
func (a *Aggregator) Leader() bool {
	if a.elector == nil {
		return a.leader.Load()
	}
	return a.active.Load() && a.elector.Leading()
}

// ID is the aggregator's configured or generated ID.
func (a *Aggregator) ID() string { return a.cfg.ID }

// Ready reports whether the aggregator is connected to NATS and its history
// and rollup streams exist and answer; if not, reason says what is missing
// (/readyz answers it). Live snapshots flow meanwhile: an aggregator that is
// not ready publishes live-only and refills the history later.
func (a *Aggregator) Ready() (reason string, ok bool) {
	if !a.cfg.NATS.IsConnected() {
		return "not connected to NATS", false
	}
	if m := a.streamMissing.Load(); m != nil {
		return *m, false
	}
	return "ready", true
}

// State returns a copy of the merge state (see Merger.State).
func (a *Aggregator) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mergeState()
}

// Restore replaces the merge state (see Merger.Restore).
func (a *Aggregator) Restore(s State) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.restoreState(s)
}

// Run subscribes to reports and to what is published, keeps the history and
// rollup streams in place, campaigns for leadership and ticks every
// wall-clock second until ctx ends or Shutdown is called. Then it stops
// intake and, if it leads, persists the merge state one last time and
// resigns, so that a follower takes over at once with nothing lost; it waits
// briefly for outstanding acks and returns nil.
//
// A JetStream outage is not an error: with LeaderDisabled snapshots still
// reach live subscribers and failed history writes are counted; with the
// election the leader stops publishing within its renew deadline, because it
// can no longer prove that it alone leads. Streams are ensured again with
// backoff. Run returns an error only if it cannot subscribe, if the lease
// bucket's TTL differs from Leader.TTL (leader.ErrTTLMismatch), or with
// ErrClosed or ErrRunning.
func (a *Aggregator) Run(ctx context.Context) error {
	ctx, err := a.life.Start(ctx)
	if err != nil {
		return err
	}
	defer a.life.Exit()
	// The election's failure ends the tick loop below.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				a.log.Warn("unsubscribe", "subject", sub.Subject, "err", err)
			}
		}
	}()
	for _, s := range a.subscriptions() {
		sub, err := a.cfg.NATS.Subscribe(s.subject, s.cb)
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", s.subject, err)
		}
		subs = append(subs, sub)
	}

	var wg sync.WaitGroup
	wg.Go(func() { a.streamLoop(ctx) })
	var electErr error
	// The election outlives ctx: it ends after the hand-over below.
	ectx, stopElection := context.WithCancel(context.Background())
	defer stopElection()
	if a.elector != nil {
		wg.Go(func() {
			if err := a.elector.Run(ectx); err != nil {
				electErr = err
				cancel()
			}
		})
	}
	var writer sync.WaitGroup
	writer.Go(func() { a.rollupLoop(ctx) })
	if a.elector != nil {
		writer.Go(func() { a.stateLoop(ctx) })
		writer.Go(func() { a.refillLoop(ctx) })
	}
	a.tickLoop(ctx)
	writer.Wait() // tickLoop returned: ctx ended, so have stateLoop and refillLoop

	// Stop intake, so that the last state holds every report applied.
	for _, sub := range subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			a.log.Warn("unsubscribe", "subject", sub.Subject, "err", err)
		}
	}
	subs = nil
	if a.elector != nil {
		a.handOver()
		stopElection()
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
	a.rollJS.CleanupPublisher()
	if electErr != nil {
		return fmt.Errorf("leader election: %w", electErr)
	}
	return nil
}

// Shutdown stops Run and waits for it to return, or for ctx to end. It is
// idempotent; after it, Run returns ErrClosed.
func (a *Aggregator) Shutdown(ctx context.Context) error {
	if !a.life.Stop() {
		return nil
	}
	if err := a.life.Wait(ctx); err != nil {
		return fmt.Errorf("shut down aggregator: %w", err)
	}
	return nil
}

// onReport runs on the subscription's delivery goroutine. The report's body
// is authoritative; its subject only routes it. Should this subscription
// ever fall behind and NATS drop reports for it, nothing is lost: the next
// report of each instance carries its cumulative counters.
func (a *Aggregator) onReport(msg *nats.Msg) {
	a.metrics.received.Inc()
	// A decoder per delivery goroutine (reused histogram buckets): the
	// merger and the replay buffer copy out what they keep.
	dec := reportDecoders.Get().(*proto.ReportDecoder)
	defer reportDecoders.Put(dec)
	r, err := dec.Decode(msg.Data)
	if err != nil {
		a.metrics.decodeErrors.Inc()
		if ok, suppressed := a.decodeLog.allow(a.cfg.Now()); ok {
			a.log.Warn("drop undecodable report", "subject", msg.Subject, "err", err, "suppressed", suppressed)
		}
		return
	}
	now := a.cfg.Now()
	if !subjectMatches(msg.Subject, &r) {
		a.rejectReport(&r, msg.Subject, RejectSubject, now)
		return
	}
	a.mu.Lock()
	out := a.merger.Apply(r, now)
	why := a.merger.LastRejection()
	if a.elector != nil && out != OutcomeRejected {
		a.replay.add(r, now)
	}
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
		a.rejectReport(&r, msg.Subject, why, now)
	case OutcomeNewInstance:
		a.log.Debug("new gateway instance", "instance", r.Instance, "region", r.Region)
	}
}

var reportDecoders = sync.Pool{New: func() any { return new(proto.ReportDecoder) }}

// tickLoop ticks on every wall-clock second boundary (TierCluster: see
// clustertier.go). The timer is re-armed for the next boundary after each
// tick, so ticks never drift; a tick that overruns its second skips the
// boundaries it missed instead of bunching. A change of leadership ticks at
// once, so that a new leader publishes the current second without waiting
// for the next.
func (a *Aggregator) tickLoop(ctx context.Context) {
	timer := time.NewTimer(a.untilTick())
	defer timer.Stop()
	last := int64(-1 << 63)
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.nudge:
			if now := a.cfg.Now(); a.nudgeTicks(now, last) {
				a.tick(ctx, now)
			}
			continue
		case <-a.regionsIn: // nil but for TierCluster
			if a.cfg.Now().Unix() == last {
				continue // a late region of a second already ticked
			}
		case <-timer.C:
		}
		now := a.cfg.Now()
		if sec := now.Unix(); sec != last {
			last = sec
			a.tick(ctx, now)
		}
		timer.Reset(a.untilTick())
	}
}

func (a *Aggregator) untilNextSecond() time.Duration {
	now := a.cfg.Now()
	if d := now.Truncate(time.Second).Add(time.Second).Sub(now); d > 0 {
		return d
	}
	return time.Second
}

// logLimiter lets one log line through per period and counts the rest.
type logLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allowQuiet reports whether to log now, without counting a line withheld:
// for a caller that says what it withheld in its next line.
func (l *logLimiter) allowQuiet(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.passLocked(now)
}

// allow reports whether to log now, and how many lines were suppressed
// since the last one.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.passLocked(now) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

func (l *logLimiter) passLocked(now time.Time) bool {
	if !l.last.IsZero() && now.Sub(l.last) < l.every && now.Sub(l.last) >= 0 {
		return false
	}
	l.last = now
	return true
}
