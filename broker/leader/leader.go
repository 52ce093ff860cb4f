package leader

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/service"
)

// Defaults of Config.
const (
	DefaultBucket = "MERIDIAN_LEADER"
	DefaultKey    = "leader"
	DefaultTTL    = 2 * time.Second
	// MinTTL is the shortest lease JetStream accepts (a stream's MaxAge must
	// be at least 100ms).
	MinTTL = 100 * time.Millisecond

	// openBackoffMin and openBackoffMax space attempts to open the bucket
	// while JetStream is unavailable.
	openBackoffMin = 100 * time.Millisecond
	openBackoffMax = 5 * time.Second
)

var (
	// ErrTTLMismatch means the lease bucket exists with a TTL other than
	// Config.TTL. Electors that disagree on the TTL cannot fence each other,
	// so Run refuses to campaign; delete the bucket to change the TTL.
	ErrTTLMismatch = errors.New("lease bucket TTL differs from the configured TTL")
	// ErrRunning is returned by a second concurrent Run. (An Elector, unlike
	// the roles, may Run again after a Run returned, until Resign.)
	ErrRunning = service.ErrRunning
	// ErrClosed is returned by Run after Resign.
	ErrClosed = service.ErrClosed
)

// Config configures an Elector. Zero fields take the documented defaults.
type Config struct {
	// JS opens the bucket (creating it with TTL, history 1 and file storage
	// when it is missing). Required unless KV is set.
	JS jetstream.JetStream
	// KV is an already open bucket; its TTL must equal TTL. When set, JS,
	// Bucket and Replicas are not used.
	KV jetstream.KeyValue
	// Bucket names the lease bucket. Default "MERIDIAN_LEADER".
	Bucket string
	// Replicas of the bucket when Run creates it: 1 (default) on a single
	// node, 3 in a cluster.
	Replicas int
	// Key is the lease's key in the bucket, one per job. Default "leader".
	Key string
	// ID names this elector in logs and in the lease value. Default: the
	// host name and a random suffix.
	ID string
	// TTL is how long a lease lives without renewal: a dead leader is
	// replaced between TTL−Renew and TTL+Poll after it died. Default 2s,
	// minimum 100ms.
	TTL time.Duration
	// Renew is how often the leader renews. Default TTL/4.
	Renew time.Duration
	// RenewDeadline is how long after its last acknowledged renewal a leader
	// keeps leading; it must be below TTL, and TTL − RenewDeadline is the
	// guaranteed pause between two leaders. Default TTL/2.
	RenewDeadline time.Duration
	// Poll is how often a follower reads the lease. Default TTL/10.
	Poll time.Duration
	// Now is the clock leadership is timed with. It must advance with real
	// time (timers are real); it exists so that tests can shift it. Default
	// time.Now.
	Now func() time.Time
	// Logger receives leadership changes and lease errors. Default
	// slog.Default().
	Logger *slog.Logger
	// OnChange is called on Run's goroutine whenever Leading changes as Run
	// sees it, and with false when Run returns while leading. It must return
	// quickly.
	OnChange func(leading bool)
}

// lease is what Leading reads: leadership ends at until.
type lease struct{ until time.Time }

// Elector campaigns for one lease. Build it with New, run it with Run.
type Elector struct {
	cfg   Config
	token []byte // the lease value: ID, a space, and a nonce
	log   *slog.Logger

	cur    atomic.Pointer[lease]  // nil while not leading
	holder atomic.Pointer[string] // ID of the lease holder as last seen
	// storeDown is set while the lease store counts as unavailable (see
	// campaign.settle).
	storeDown atomic.Bool
	outage    atomic.Bool // see InOutage

	resignCh chan struct{} // closed by Resign: Run returns between two lease operations

	mu       sync.Mutex // guards the fields below and every write of cur
	resigned bool
	running  bool
	done     chan struct{}      // closed when a running Run returns
	kv       jetstream.KeyValue // the bucket, once a Run has opened it
}

// Validate reports the first problem with cfg's values: a bad key, a
// negative number, or timings (after defaults) that cannot fence leaders.
// (New also checks that JS or KV is set.)
func (c Config) Validate() error {
	err := service.First(
		service.NonNegative("Replicas", c.Replicas),
		service.NonNegative("TTL", c.TTL),
		service.NonNegative("Renew", c.Renew),
		service.NonNegative("RenewDeadline", c.RenewDeadline),
		service.NonNegative("Poll", c.Poll),
	)
	if err != nil {
		return err
	}
	d := c.withDefaults()
	switch {
	case !validKey(d.Key):
		return fmt.Errorf("key %q: use letters, digits, '-', '_', '=' and inner dots", d.Key)
	case d.TTL < MinTTL:
		return fmt.Errorf("TTL %v is below the minimum %v", d.TTL, MinTTL)
	case d.Renew == 0 || d.Renew >= d.RenewDeadline:
		return fmt.Errorf("Renew %v must be positive and below RenewDeadline %v", d.Renew, d.RenewDeadline)
	case d.RenewDeadline >= d.TTL:
		return fmt.Errorf("RenewDeadline %v must be below TTL %v", d.RenewDeadline, d.TTL)
	case d.Poll == 0 || d.Poll >= d.TTL:
		return fmt.Errorf("Poll %v must be positive and below TTL %v", d.Poll, d.TTL)
	}
	return nil
}

// withDefaults fills zero fields; the timings default to fractions of TTL.
func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.ID == "" {
		c.ID = DefaultID()
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Renew == 0 {
		c.Renew = c.TTL / 4
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = c.TTL / 2
	}
	if c.Poll == 0 {
		c.Poll = c.TTL / 10
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// New validates cfg and builds an Elector.
func New(cfg Config) (*Elector, error) {
	if cfg.JS == nil && cfg.KV == nil {
		return nil, errors.New("new elector: Config.JS or Config.KV is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new elector: %w", err)
	}
	cfg = cfg.withDefaults()
	return &Elector{
		resignCh: make(chan struct{}),
		cfg:      cfg,
		token:    []byte(cfg.ID + " " + randomHex(8)),
		log:      cfg.Logger.With("component", "leader", "id", cfg.ID, "key", cfg.Key),
	}, nil
}

// DefaultID is the host name and a random suffix, unique per call.
func DefaultID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	return host + "-" + randomHex(4)
}

func randomHex(n int) string {
	b := make([]byte, n)
	// crypto/rand.Read never fails on supported platforms.
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validKey mirrors JetStream's rule for key-value keys.
func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_=./", c) >= 0) {
			return false
		}
	}
	return true
}

// ID is the elector's configured or generated ID.
func (e *Elector) ID() string { return e.cfg.ID }

// Leading reports whether this elector holds the lease now. It turns false
// by itself RenewDeadline after the last acknowledged renewal, whatever the
// election goroutine is doing, so it is the check to make right before each
// write that only the leader may do. It is cheap: an atomic load and a
// clock read.
func (e *Elector) Leading() bool {
	l := e.cur.Load()
	return l != nil && e.cfg.Now().Before(l.until)
}

// Holder is the ID of the lease holder as this elector last saw it: its
// own ID once it took the lease, another's as read while following, "" when
// the lease was free or not yet read. A follower learns of a new holder
// within Poll.
func (e *Elector) Holder() string {
	if h := e.holder.Load(); h != nil {
		return *h
	}
	return ""
}

func (e *Elector) setHolder(id string) { e.holder.Store(&id) }

// StoreUnavailable reports whether the lease store has been failing: the
// last round of lease operations failed, and no write (ours or another's)
// has succeeded since. Nobody can be elected then; a caller may decide what
// to do without a leader (see the aggregator's live-only publishing).
func (e *Elector) StoreUnavailable() bool { return e.storeDown.Load() }

// InOutage reports whether the lease store failed and has not worked since
// for 10 s: the time between the "lease store unavailable" and "lease store
// recovered" log lines, relapses included.
func (e *Elector) InOutage() bool { return e.outage.Load() }

// setLease records a lease until until, unless the elector has resigned.
func (e *Elector) setLease(until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.resigned {
		e.cur.Store(&lease{until: until})
	}
}

func (e *Elector) clearLease() { e.cur.Store(nil) }

func (e *Elector) isResigned() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resigned
}

// Run campaigns until ctx ends or Resign is called, and returns nil then.
// When ctx ends the lease is not released: it expires after TTL, exactly as
// if the process had died. Run returns ErrTTLMismatch when the bucket's TTL
// differs from Config.TTL, ErrRunning when already running and ErrClosed
// after Resign. JetStream being unavailable is not an error: Run retries,
// following meanwhile.
func (e *Elector) Run(ctx context.Context) error {
	e.mu.Lock()
	switch {
	case e.resigned:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return ErrRunning
	}
	e.running, e.done = true, make(chan struct{})
	e.mu.Unlock()

	c := &campaign{e: e, kv: e.cfg.KV}
	err := c.run(ctx)

	e.clearLease()
	if c.reported {
		c.report(false)
	}
	e.mu.Lock()
	e.running = false
	e.kv = c.kv
	close(e.done)
	e.mu.Unlock()
	return err
}

// Resign stops leading at once, makes Run return, and deletes the lease if
// this elector holds it, so that another elector takes over within its Poll
// instead of after TTL. It is idempotent, and also releases a lease left by
// a Run that returned because its context ended. After Resign, Run returns
// ErrClosed.
func (e *Elector) Resign(ctx context.Context) error {
	e.mu.Lock()
	first := !e.resigned
	e.resigned = true
	e.clearLease()
	running, done := e.running, e.done
	e.mu.Unlock()
	if first {
		close(e.resignCh)
	}
	if running {
		// Run is not cancelled: it returns once its lease operation in
		// flight is answered (or times out), so that the lease read below
		// is not overtaken by a renewal still on its way.
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("resign: wait for the election to stop: %w", ctx.Err())
		}
	}
	e.mu.Lock()
	kv := e.kv
	e.mu.Unlock()
	if kv == nil {
		return nil // Run never opened the bucket: nothing can be ours
	}
	// Read the lease rather than trust the last revision Run saw: a renewal
	// whose answer was lost may have been stored all the same.
	entry, err := kv.Get(ctx, e.cfg.Key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("resign: read lease %s: %w", e.cfg.Key, err)
	case !bytes.Equal(entry.Value(), e.token):
		return nil // someone else's
	}
	// Only that revision: never delete a lease someone else took since.
	err = kv.Delete(ctx, e.cfg.Key, jetstream.LastRevision(entry.Revision()))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("resign: delete lease %s: %w", e.cfg.Key, err)
	}
	e.log.Info("resigned")
	return nil
}

// campaign is the state of one Run, owned by its goroutine.
type campaign struct {
	e        *Elector
	kv       jetstream.KeyValue
	reported bool // the leadership last passed to OnChange

	// While leading: the lease's revision, when the last acknowledged
	// renewal was sent, and when leadership ends without another.
	rev      uint64
	lastSent time.Time
	until    time.Time

	// While following: the holder's revision and when it was first seen.
	seenRev uint64
	seenAt  time.Time

	failing bool // the lease store counts as unavailable (StoreUnavailable)
	// told: "unavailable" was logged and "recovered" not yet; okSince: when
	// the store last went from failing to working.
	told    bool
	okSince time.Time
	// roundFailed and roundOK: some lease operation of the current round
	// failed, succeeded (see settle).
	roundFailed, roundOK bool
}

func (c *campaign) run(ctx context.Context) error {
	if err := c.open(ctx); err != nil || ctx.Err() != nil || c.e.isResigned() {
		return err
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.e.resignCh:
			return nil
		case <-timer.C:
		}
		if c.e.isResigned() { // before another lease operation, whatever select chose
			return nil
		}
		var next time.Duration
		// One round of lease operations; its outcome is logged after it.
		c.roundFailed, c.roundOK = false, false
		if c.rev != 0 {
			next = c.renew(ctx)
		} else {
			next = c.follow(ctx)
		}
		c.settle()
		c.sync()
		timer.Reset(max(next, 0))
	}
}

// open opens or creates the bucket, retrying until ctx ends, and checks its
// TTL.
func (c *campaign) open(ctx context.Context) error {
	cfg := &c.e.cfg
	backoff := openBackoffMin
	// While a fresh cluster elects its leaders every attempt fails alike:
	// log each distinct error once, not each retry.
	var last string
	for {
		err := c.tryOpen(ctx)
		if err == nil || errors.Is(err, ErrTTLMismatch) {
			if err != nil {
				c.e.log.Error("cannot campaign", "err", err)
			} else if last != "" {
				c.e.log.Info("lease bucket open", "bucket", cfg.Bucket)
			}
			return err
		}
		if msg := err.Error(); msg != last {
			c.e.log.Warn("open lease bucket; retrying", "bucket", cfg.Bucket, "err", err, "backoff_max", openBackoffMax)
			last = msg
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.e.resignCh:
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, openBackoffMax)
	}
}

func (c *campaign) tryOpen(ctx context.Context) error {
	cfg := &c.e.cfg
	// Not cancelled with Run: a bucket creation abandoned half-way would go
	// on in the server after Run returned. The timeout bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(cfg.TTL, time.Second))
	defer cancel()
	if c.kv == nil {
		kv, err := cfg.JS.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = cfg.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      cfg.Bucket,
				Description: "Meridian leader leases",
				History:     1,
				TTL:         cfg.TTL,
				Storage:     jetstream.FileStorage,
				Replicas:    max(cfg.Replicas, 1),
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = cfg.JS.KeyValue(ctx, cfg.Bucket)
			}
		}
		if err != nil {
			return fmt.Errorf("open lease bucket %s: %w", cfg.Bucket, err)
		}
		c.kv = kv
	}
	st, err := c.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("read lease bucket status: %w", err)
	}
	if st.TTL() != cfg.TTL {
		return fmt.Errorf("lease bucket %s has TTL %v, configured %v: %w", st.Bucket(), st.TTL(), cfg.TTL, ErrTTLMismatch)
	}
	return nil
}

// sync reports a change of leadership, as Leading sees it, to OnChange.
func (c *campaign) sync() {
	if now := c.e.Leading(); now != c.reported {
		c.report(now)
	}
}

func (c *campaign) report(leading bool) {
	c.reported = leading
	if leading {
		c.e.log.Info("leading")
	} else {
		c.e.log.Info("stopped leading")
	}
	if c.e.cfg.OnChange != nil {
		c.e.cfg.OnChange(leading)
	}
}

// lead records a lease acquired or renewed with a request sent at sent.
func (c *campaign) lead(rev uint64, sent time.Time) {
	c.rev, c.lastSent, c.until = rev, sent, sent.Add(c.e.cfg.RenewDeadline)
	c.seenRev = 0
	c.e.setLease(c.until)
	c.e.setHolder(c.e.cfg.ID)
}

// stepDown gives up the lease as lost.
func (c *campaign) stepDown(reason string, err error) {
	c.e.clearLease()
	c.e.log.Warn("lost the lease", "reason", reason, "err", err)
	c.rev = 0
}

// renew renews the lease and returns when to act next.
func (c *campaign) renew(ctx context.Context) time.Duration {
	cfg := &c.e.cfg
	now := cfg.Now()
	if wait := c.lastSent.Add(cfg.Renew).Sub(now); wait > 0 {
		return wait
	}
	if !now.Before(c.until) {
		c.stepDown("renewal deadline passed", nil)
		return 0
	}
	// Never wait for an answer past the fence: a leader that cannot renew
	// must notice that it no longer leads.
	rctx, cancel := context.WithDeadline(ctx, c.until)
	rev, err := c.kv.Update(rctx, cfg.Key, c.e.token, c.rev)
	cancel()
	switch {
	case err == nil:
		c.ok()
		c.lead(rev, now)
		return cfg.Renew
	case ctx.Err() != nil:
		return 0
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Perhaps an earlier renewal was stored but its answer lost: then
		// the key still holds our token at a newer revision.
		gctx, cancel := context.WithDeadline(ctx, c.until)
		e, gerr := c.kv.Get(gctx, cfg.Key)
		cancel()
		if gerr == nil && bytes.Equal(e.Value(), c.e.token) {
			c.rev = e.Revision()
			return 0 // renew against it when due; the deadline stays as it was
		}
		c.stepDown("lease taken over or removed", err)
		return 0
	default:
		c.fail("renew lease", err)
		if !cfg.Now().Before(c.until) {
			c.stepDown("renewal deadline passed", err)
			return 0
		}
		return min(cfg.Poll, c.until.Sub(cfg.Now()))
	}
}

// follow reads the lease, takes it when it is free or its holder stopped
// renewing, and returns when to act next.
func (c *campaign) follow(ctx context.Context) time.Duration {
	cfg := &c.e.cfg
	gctx, cancel := context.WithTimeout(ctx, cfg.Renew)
	e, err := c.kv.Get(gctx, cfg.Key)
	cancel()
	now := cfg.Now() // after the answer: no earlier than the revision was written
	// A read alone does not show that the store works again: without
	// quorum reads may still be answered while writes fail. Recovery is a
	// write, ours (acquire) or another's (a new revision).
	switch {
	case err == nil:
		c.e.setHolder(holderID(e.Value()))
	case errors.Is(err, jetstream.ErrKeyNotFound):
		c.e.setHolder("")
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		c.acquire(ctx, 0)
	case err != nil:
		if ctx.Err() == nil {
			c.fail("read lease", err)
		}
	case bytes.Equal(e.Value(), c.e.token):
		// Ours: a renewal whose answer was lost. Nobody else took it since.
		c.acquire(ctx, e.Revision())
	case e.Revision() != c.seenRev:
		c.ok()
		c.seenRev, c.seenAt = e.Revision(), now
	case now.Sub(c.seenAt) >= cfg.TTL:
		c.e.log.Info("lease expired; taking over", "holder", holderID(e.Value()), "revision", e.Revision())
		c.acquire(ctx, e.Revision())
	}
	if c.rev != 0 {
		return cfg.Renew
	}
	next := cfg.Poll
	if c.seenRev != 0 {
		// Try the moment the holder's lease runs out, not up to Poll later.
		next = min(next, c.seenAt.Add(cfg.TTL).Sub(cfg.Now()))
	}
	return next
}

// acquire creates the lease (rev 0) or takes it over from revision rev.
func (c *campaign) acquire(ctx context.Context, rev uint64) {
	cfg := &c.e.cfg
	sent := cfg.Now()
	actx, cancel := context.WithTimeout(ctx, cfg.Renew)
	defer cancel()
	var (
		newRev uint64
		err    error
	)
	if rev == 0 {
		newRev, err = c.kv.Create(actx, cfg.Key, c.e.token)
	} else {
		newRev, err = c.kv.Update(actx, cfg.Key, c.e.token, rev)
	}
	switch {
	case err == nil:
		c.ok()
		c.lead(newRev, sent)
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Someone else was faster; follow them. Not evidence that the
		// store takes writes now: the revision read may have been stale.
		// Then the next reads may be as stale: wait a TTL from now before
		// taking over again, rather than retrying at once in a loop.
		c.seenAt = cfg.Now()
	case ctx.Err() == nil:
		c.fail("acquire lease", err)
	}
}

// recoveredQuiet is how long the lease store must work, every operation,
// before "lease store recovered" is logged: a JetStream cluster whose nodes
// return re-elects its stream leaders for a while, and each relapse of
// that is part of the same outage, not a new one to log.
const recoveredQuiet = 10 * time.Second

// fail and ok record the outcome of one lease operation of the round;
// settle applies the round's outcome. A round may read the lease and then
// fail to write it (JetStream without quorum can still answer reads), so the
// store counts as unavailable when any operation of the round failed and as
// available again after a round in which every operation succeeded. The log
// says it once each way per outage: unavailable at the first failure,
// recovered once the store has worked for recoveredQuiet; never a line per
// poll, nor a pair per relapse.
func (c *campaign) fail(what string, err error) {
	if !c.told {
		c.told = true
		c.e.outage.Store(true)
		c.e.log.Warn("lease store unavailable", "op", what, "err", err)
	}
	c.roundFailed = true
}

func (c *campaign) ok() { c.roundOK = true }

func (c *campaign) settle() {
	now := c.e.cfg.Now()
	switch {
	case c.roundFailed:
		c.failing = true
	case c.roundOK && c.failing:
		c.failing, c.okSince = false, now
	}
	c.e.storeDown.Store(c.failing)
	if c.told && !c.failing && now.Sub(c.okSince) >= recoveredQuiet {
		c.told = false
		c.e.outage.Store(false)
		c.e.log.Info("lease store recovered", "working_for", now.Sub(c.okSince).Round(time.Millisecond))
	}
}

// holderID is the ID part of a lease value.
func holderID(v []byte) string {
	id, _, _ := strings.Cut(string(v), " ")
	return id
}
