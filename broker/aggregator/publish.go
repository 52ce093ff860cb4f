package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// mayPublish is the check made before every publish and state write: the
// fence of the election, or SetLeader's flag.
func (a *Aggregator) mayPublish() bool {
	return a.elected() || a.liveOnly.Load()
}

// tick computes the second's snapshots and, leading, publishes them and the
// rollups of the minutes that ended, and persists the merge state.
func (a *Aggregator) tick(ctx context.Context, now time.Time) {
	a.checkLiveOnly(now)
	a.kickRefill()
	leading := a.elected()
	if a.elector != nil {
		switch {
		case !leading && a.active.Load():
			a.active.Store(false)
			a.log.Info("stopped publishing")
		case leading && !a.active.Load():
			if err := a.takeOver(ctx); err != nil {
				a.metrics.restoreErrors.Inc()
				if ok, suppressed := a.stateLog.allow(now); ok {
					a.log.Warn("take over: read the persisted merge state; retrying next tick", "err", err, "suppressed", suppressed)
				}
				leading = false
			} else {
				a.active.Store(true)
			}
		}
	}
	var st State
	persist := false
	// A follower publishes nothing: no instance needs its quantiles.
	wanted := func(string) bool { return false }
	if leading || a.liveOnly.Load() {
		wanted = a.instanceFilter(now)
	}
	a.mu.Lock()
	snaps := a.snapshotsAt(now, wanted)
	if a.elector != nil {
		a.replay.prune(now, a.merger.cfg.ForgetAfter)
		if leading && a.queueState() {
			st = a.mergeState() // the state these snapshots show
			persist = true
		}
	}
	a.mu.Unlock()
	a.metrics.ticks.Inc()
	if !leading && a.liveOnly.Load() {
		a.publish(snaps, wanted)
		a.book.close(now)
		a.rolls = a.book.appendPending(a.rolls[:0], true)
		a.keepRollups(a.rolls, now)
		return
	}
	if !leading {
		a.book.close(now)
		return
	}
	start := time.Now()
	a.publish(snaps, wanted)
	if persist {
		a.stateQ <- st // never blocks: queueState admits one at a time
	}
	a.book.close(now)
	// The cluster and region rollups go out with the snapshots; the instance
	// rollups, one per instance, to the paced writer (rollwriter.go), so that
	// they never hold up a second's snapshots.
	a.rolls = a.book.appendPending(a.rolls[:0], false)
	a.publishRollups(a.rolls)
	a.rollq.add(a.book.takeInstancePending, time.Now(), a.cfg.RollupSpread)
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

// publish sends one tick's snapshots, each unless that second of its scope
// was published already (by an earlier leader, or by this one on an earlier
// tick of the same second), and only while leading. Each goes out with
// JetStream so the history stream acknowledges it, with a message id of
// scope and second so that a re-publish of the same second is stored once;
// live subscribers get it either way. No retries: a no-responders retry
// would deliver the snapshot to live subscribers twice. When acks back up,
// the rest of the tick goes out as plain NATS messages (the stream still
// captures and dedupes them, but unacknowledged) so live data never waits
// for history. Instance snapshots go out only where publishInstance says
// so (all when it is nil); the others, whose latency quantiles were not
// computed, still count towards their scope's rollup.
func (a *Aggregator) publish(snaps []proto.Snapshot, publishInstance func(name string) bool) {
	backedUp := false
	for i := range snaps {
		s := &snaps[i]
		if !a.mayPublish() {
			return
		}
		if s.Scope.Kind == proto.ScopeInstance && publishInstance != nil && !publishInstance(s.Scope.Name) {
			a.book.claim(s)
			continue
		}
		claimed, held := a.book.claim(s)
		if !claimed {
			continue
		}
		if held {
			a.metrics.heldBack.Inc()
		}
		if a.send(proto.SnapshotSubject(s.Scope), messageID(s), s, &backedUp) {
			a.metrics.published.Inc()
		}
	}
}

// publishRollups sends the rollups of the minutes that ended. One that could
// not be sent stays pending for the next tick.
func (a *Aggregator) publishRollups(rolls []proto.Snapshot) {
	backedUp := false
	for i := range rolls {
		r := &rolls[i]
		if !a.mayPublish() {
			return
		}
		if a.send(proto.RollupSubject(r.Scope), messageID(r), r, &backedUp) {
			a.metrics.rollups.Inc()
			a.book.rolledUp(r)
		}
	}
}

// send publishes one snapshot or rollup with message id id and reports
// whether it went out. Once acks back up (*backedUp), it publishes without
// waiting for acks.
func (a *Aggregator) send(subject, id string, s *proto.Snapshot, backedUp *bool) bool {
	data, err := s.Encode()
	if err != nil {
		a.writeFailed(fmt.Errorf("encode %s: %w", subject, err))
		return false
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(PublisherHeader, a.cfg.ID)
	if a.liveOnly.Load() {
		// No acks to wait for without JetStream; the stream stores it if it
		// can, once, and the refill writes it once the store works again.
		msg.Header.Set(jetstream.MsgIDHeader, id)
		if a.cfg.NATS.PublishMsg(msg) != nil {
			return false
		}
		a.keepLiveOnly(s, id, data)
		return true
	}
	if !*backedUp {
		_, err = a.js.PublishMsgAsync(msg,
			jetstream.WithMsgID(id), jetstream.WithRetryAttempts(0), jetstream.WithStallWait(stallWait))
		if err == nil {
			return true
		}
		*backedUp = errors.Is(err, jetstream.ErrTooManyStalledMsgs)
		if !*backedUp {
			a.writeFailed(fmt.Errorf("publish %s: %w", subject, err))
			return false
		}
	}
	msg.Header.Set(jetstream.MsgIDHeader, id)
	err = a.cfg.NATS.PublishMsg(msg)
	a.writeFailed(fmt.Errorf("publish %s: acks backed up: %w", subject, jetstream.ErrTooManyStalledMsgs))
	return err == nil
}

// onSnapshot and onRollup feed the book with what was published, by this
// aggregator or another. They run on the subscriptions' delivery goroutines.
// Only what adoptable accepts is adopted (adopt.go).
func (a *Aggregator) onSnapshot(msg *nats.Msg) {
	if a.cfg.Tier == TierAll {
		a.noteSnapshotPublisher(msg)
	}
	s, err := proto.DecodeSnapshot(msg.Data)
	if err != nil || !a.ownsScope(s.Scope) {
		return
	}
	if a.cfg.Tier != TierAll {
		a.noteSnapshotPublisher(msg)
	}
	if a.adoptable(msg, &s) {
		a.book.claim(&s)
	}
}

func (a *Aggregator) onRollup(msg *nats.Msg) {
	if s, err := proto.DecodeSnapshot(msg.Data); err == nil && a.ownsScope(s.Scope) && a.adoptable(msg, &s) {
		a.book.rolledUp(&s)
	}
}

// onWriteError is JetStream's callback for a failed or timed-out history or
// rollup write. Any failure asks the stream loop to ensure the stream again: a
// deleted stream shows as "no responders" only while nothing else listens on
// the subject, and as ack timeouts once edges subscribe, so the error alone
// cannot tell. Ensuring an existing stream is one cheap request, and the
// loop spaces attempts.
//
// Live subscribers got the message anyway; the refill writes it to its
// stream once the store works (refill.go).
func (a *Aggregator) onWriteError(_ jetstream.JetStream, msg *nats.Msg, err error) {
	select {
	case a.recheck <- struct{}{}:
	default:
	}
	a.keepUnwritten(msg)
	a.writeFailed(fmt.Errorf("write %s to its stream: %w", msg.Subject, err))
}

func (a *Aggregator) writeFailed(err error) {
	a.metrics.historyErrors.Inc()
	if ok, suppressed := a.publishLog.allow(a.cfg.Now()); ok {
		a.log.Warn("stream write failed", "err", err, "suppressed", suppressed)
	}
}

// ensureStreams ensures the history and then the rollup stream, each
// attempt bounded by ensureTimeout on its own.
func (a *Aggregator) ensureStreams(ctx context.Context) error {
	for _, ensure := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := history.EnsureStream(ctx, a.js, a.cfg.History); return err },
		func(ctx context.Context) error {
			_, err := history.EnsureRollupStream(ctx, a.js, a.cfg.Rollups)
			return err
		},
	} {
		actx, cancel := context.WithTimeout(ctx, ensureTimeout)
		err := ensure(actx)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// streamLoop creates or updates the history and rollup streams until they
// answer, and again whenever a write fails. A transient condition (a
// cluster electing its meta leader, a stream electing its own, no quorum)
// is retried every ensureRetryMax at most, so history resumes within
// seconds of the cluster healing; a refusal backs off to ensureBackoffMax.
// Each condition is logged once, when it starts, and the attempts counted.
func (a *Aggregator) streamLoop(ctx context.Context) {
	backoff := ensureBackoffMin
	var cond string       // the condition logged last; "" while ready
	var failing time.Time // when the current run of failures began
	for {
		err := a.ensureStreams(ctx)
		if ctx.Err() != nil {
			return
		}
		var wait <-chan time.Time
		if err == nil {
			a.streamMissing.Store(nil)
			if !a.streamReady.Swap(true) {
				attrs := []any{"history", proto.HistoryStream, "rollups", proto.RollupStream}
				if !failing.IsZero() {
					attrs = append(attrs, "after", a.cfg.Now().Sub(failing).Round(time.Millisecond))
				}
				a.log.Info("streams ready", attrs...)
			}
			cond, failing, backoff = "", time.Time{}, ensureBackoffMin
			select {
			case <-a.recheck:
			case <-ctx.Done():
				return
			}
			// Let the rest of the failing tick drain before trying again.
			wait = time.After(ensureBackoffMin)
		} else {
			a.streamReady.Store(false)
			a.metrics.ensureErrors.Inc()
			if failing.IsZero() {
				failing = a.cfg.Now()
			}
			now := history.Condition(err)
			missing := "history streams: " + now
			a.streamMissing.Store(&missing)
			if history.Transient(err) {
				backoff = min(backoff, ensureRetryMax)
			}
			if now != cond {
				a.log.Warn("streams not ready; retrying", "condition", now, "err", err, "every", backoff)
				cond = now
			}
			wait = time.After(backoff)
			if !history.Transient(err) {
				backoff = min(2*backoff, ensureBackoffMax)
			}
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return
		}
	}
}
