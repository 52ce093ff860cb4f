package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// Following. The edge subscribes on NATS to the snapshots its clients need,
// so its fan-in follows its clients, not the number of instances in the
// cluster: the cluster's and every region's snapshots always (a few
// messages a second), an instance's only while it is wanted — a connection
// or a subscription being prepared pins its scope, or a probe asks the
// aggregators for it — and for FollowGrace after that, so that a client
// that reconnects finds its instance still followed and current.
//
// The follow loop (followLoop, one goroutine owned by Run) is the only
// code that subscribes or unsubscribes: every interestEvery, and at once
// when poked by a new follower, so no client path (poller, shard, worker,
// handshake) ever waits on NATS for it. Every subscription delivers into
// one channel, read by intake. The same loop announces interest
// (interest.go) in exactly the instances it is subscribed to, so the
// aggregators publish what the edge listens to and nothing else.
//
// When an instance has been unwanted for FollowGrace, the loop unsubscribes
// and forgets its scope state (unless it was pinned meanwhile: then it
// subscribes again) and its history ring; intake skips the messages a
// closed subscription left queued. So a later follower looks it up afresh
// (history, then a probe) instead of being served a snapshot that stopped
// changing when the subscription ended, and its ring is never left with a
// gap that looks complete.
//
// Lock order: follower.mu, then scopeTable.mu (sync calls forget).

// Subjects the edge always follows.
var (
	clusterSubject = proto.SnapshotSubject(proto.ClusterScope())
	regionsSubject = proto.SnapshotSubjectPrefix + ".region.*"
)

// slowLogEvery spaces the log lines about snapshots dropped because intake
// fell behind (a NATS slow consumer): one line a minute at most, however
// many subscriptions overflowed.
const slowLogEvery = time.Minute

// follower owns the edge's snapshot subscriptions.
type follower struct {
	nc    *nats.Conn
	msgs  chan *nats.Msg // shared by every subscription
	grace time.Duration
	// all subscribes to every snapshot subject instead, as the edge did
	// before it followed instances: the baseline of BenchmarkFanIn.
	all bool

	mu    sync.Mutex // guards fixed, inst and droppedGone (the loop writes, metrics read)
	fixed []*nats.Subscription
	inst  map[string]*followedInstance
	// droppedGone counts the messages dropped by subscriptions since
	// closed, so that the dropped total never decreases.
	droppedGone int64

	// Owned by the follow loop.
	subscribeFailing failureLog
	loggedDrops      int64
	loggedDropsAt    time.Time
}

// failureLog logs once when a repeated operation starts failing and once
// when it works again: a NATS outage must not flood the log. Its owner
// serialises calls.
type failureLog struct{ failing bool }

func (f *failureLog) note(log *slog.Logger, err error, failing, recovered string) {
	if now := err != nil; now != f.failing {
		f.failing = now
		if now {
			log.Warn(failing, "err", err)
		} else {
			log.Info(recovered)
		}
	}
}

// followedInstance is one instance subscription.
type followedInstance struct {
	sub *nats.Subscription
	// wanted is when the instance was last wanted, on the edge's monotonic
	// clock (Edge.mono).
	wanted int64
}

func newFollower(nc *nats.Conn, grace time.Duration) *follower {
	return &follower{
		nc:    nc,
		msgs:  make(chan *nats.Msg, snapshotQueue),
		grace: grace,
		inst:  make(map[string]*followedInstance),
	}
}

// start subscribes to the cluster and region snapshots.
func (f *follower) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	subjects := []string{clusterSubject, regionsSubject}
	if f.all {
		subjects = []string{proto.SnapshotSubjectAll}
	}
	for _, subj := range subjects {
		sub, err := f.nc.ChanSubscribe(subj, f.msgs)
		if err != nil {
			f.closeLocked()
			return fmt.Errorf("subscribe to %s: %w", subj, err)
		}
		f.fixed = append(f.fixed, sub)
	}
	return nil
}

// closeAll unsubscribes from everything; Run calls it once the follow
// loop has exited.
func (f *follower) closeAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closeLocked()
}

func (f *follower) closeLocked() error {
	var errs []error
	for _, sub := range f.fixed {
		errs = append(errs, f.unsubscribe(sub))
	}
	f.fixed = nil
	for name, fi := range f.inst {
		errs = append(errs, f.unsubscribe(fi.sub))
		delete(f.inst, name)
	}
	return errors.Join(errs...)
}

// unsubscribe ends sub, keeping its drops in the total.
func (f *follower) unsubscribe(sub *nats.Subscription) error {
	if n, err := sub.Dropped(); err == nil {
		f.droppedGone += int64(n)
	}
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("unsubscribe from %s: %w", sub.Subject, err)
	}
	return nil
}

// sync makes the instance subscriptions match wanted (sorted, no
// duplicates) at now: new ones subscribed, those unwanted for the grace
// period unsubscribed and forgotten (forget refuses for a scope pinned
// meanwhile, which is then subscribed again). It appends to followed the instances subscribed afterwards,
// sorted, and returns the first subscribe error.
func (f *follower) sync(wanted []string, now int64, forget func(name string) bool, followed []string) ([]string, error) {
	if f.all {
		return append(followed, wanted...), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var firstErr error
	for _, name := range wanted {
		if fi := f.inst[name]; fi != nil {
			fi.wanted = now
			continue
		}
		sub, err := f.nc.ChanSubscribe(proto.SnapshotSubject(proto.InstanceScope(name)), f.msgs)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("subscribe to instance %s: %w", name, err)
			}
			continue
		}
		f.inst[name] = &followedInstance{sub: sub, wanted: now}
	}
	for name, fi := range f.inst {
		if fi.wanted == now || time.Duration(now-fi.wanted) < f.grace {
			continue
		}
		// Unsubscribed first: intake then skips what the subscription
		// left queued, so nothing recreates the state forgotten next.
		if err := f.unsubscribe(fi.sub); err != nil && firstErr == nil {
			firstErr = err
		}
		delete(f.inst, name)
		if !forget(name) {
			// Pinned in between: follow it again at once.
			sub, err := f.nc.ChanSubscribe(fi.sub.Subject, f.msgs)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("subscribe to instance %s: %w", name, err)
				}
				continue
			}
			f.inst[name] = &followedInstance{sub: sub, wanted: now}
		}
	}
	start := len(followed)
	for name := range f.inst {
		followed = append(followed, name)
	}
	slices.Sort(followed[start:])
	return followed, firstErr
}

// instances is the number of instances subscribed to.
func (f *follower) instances() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.inst)
}

// following reports whether the edge is subscribed to instance name.
func (f *follower) following(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inst[name] != nil
}

// dropped is the number of snapshot messages the NATS client dropped
// because the intake channel was full, over the edge's life.
func (f *follower) dropped() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.droppedGone
	for _, sub := range f.fixed {
		if d, err := sub.Dropped(); err == nil {
			n += int64(d)
		}
	}
	for _, fi := range f.inst {
		if d, err := fi.sub.Dropped(); err == nil {
			n += int64(d)
		}
	}
	return n
}

// followLoop keeps the subscriptions and the interest announcements in
// step with the instances wanted, until stop closes. It runs on its own
// goroutine, owned and joined by Run.
func (e *Edge) followLoop(stop <-chan struct{}) {
	t := time.NewTicker(interestEvery)
	defer t.Stop()
	var wanted, followed []string
	forget := func(name string) bool {
		scope := proto.InstanceScope(name)
		if !e.scopes.forget(scope) {
			return false
		}
		e.hist.drop(scope)
		return true
	}
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			e.logDrops()
		case <-e.interest.nudge:
		}
		wanted = e.scopes.pinnedInstances(wanted[:0])
		wanted = e.interest.probing(wanted, e.cfg.Now())
		slices.Sort(wanted)
		wanted = slices.Compact(wanted)
		var err error
		followed, err = e.follow.sync(wanted, e.mono(), forget, followed[:0])
		e.follow.subscribeFailing.note(e.log, err,
			"subscribe to a followed instance's snapshots; retrying every second", "subscribing to followed instances again")
		if len(followed) > 0 {
			e.announceFollowed(followed)
		}
	}
}

// logDrops logs, at most once per slowLogEvery, that NATS dropped snapshot
// messages because intake fell behind. The metric
// snapshot_messages_dropped_total counts every one.
func (e *Edge) logDrops() {
	f := e.follow
	n := f.dropped()
	if n == f.loggedDrops {
		return
	}
	now := time.Now()
	if !f.loggedDropsAt.IsZero() && now.Sub(f.loggedDropsAt) < slowLogEvery {
		return
	}
	e.log.Warn("nats slow consumer: live snapshots dropped because the edge's intake fell behind; clients get the next ones",
		"dropped", n-f.loggedDrops, "dropped_total", n, "followed_instances", f.instances(), "next_report_after", slowLogEvery)
	f.loggedDrops, f.loggedDropsAt = n, now
}
