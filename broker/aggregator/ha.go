package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Timeouts of the state operations. They are short because they run on the
// tick goroutine, and a new leader should publish within its first second.
const (
	takeOverTimeout   = time.Second
	stateWriteTimeout = 500 * time.Millisecond
	handOverTimeout   = 2 * time.Second
)

// onLeadership is the elector's OnChange: count the change and tick at once,
// so that a new leader takes over (or an old one stops) without waiting for
// the next second.
func (a *Aggregator) onLeadership(bool) {
	a.metrics.leaderChanges.Inc()
	select {
	case a.nudge <- struct{}{}:
	default:
	}
}

// takeOver makes a newly elected leader's merge state the cluster's: it
// restores the state the last leader persisted and replays the reports this
// aggregator buffered since, so that reports the old leader applied after its
// last state write, or never saw, count exactly once. With no persisted state
// (the cluster's first leader) it keeps the state it merged itself. An error
// leaves the merger as it was; the tick retries while it leads.
//
// A persisted state that does not decode or fails validation is a bug or
// corruption, not a reason to stop publishing forever: it is logged, counted
// in state_restore_errors_total, and overwritten.
func (a *Aggregator) takeOver(ctx context.Context) error {
	start := time.Now()
	// Not cancelled with Run: a bucket creation abandoned half-way would go
	// on in the server after Run returned. The timeout bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeOverTimeout)
	defer cancel()
	a.stateMu.Lock() // after a state write of an earlier leadership, if any
	defer a.stateMu.Unlock()
	if a.stateKV == nil {
		kv, err := openStateBucket(ctx, a.js, a.cfg.StateReplicas)
		if err != nil {
			return err
		}
		a.stateKV = kv
	}
	var (
		st      *State
		corrupt error
	)
	data, rev, gen, err := getState(ctx, a.stateKV, a.cfg.stateKey())
	switch {
	case errors.Is(err, errNoState):
	case errors.Is(err, ErrInvalidState):
		corrupt = err
	case err != nil:
		return err
	default:
		s, err := DecodeState(data)
		if err != nil {
			corrupt = err
		} else {
			st = &s
		}
	}

	a.mu.Lock()
	if st != nil {
		if err := a.restoreState(*st); err != nil {
			corrupt = err
		}
	}
	var rs replayStats
	if st != nil && corrupt == nil {
		rs = a.replay.replay(a.merger)
	}
	instances := a.merger.Len()
	a.mu.Unlock()

	a.stateRev, a.stateGen = rev, gen
	if st != nil && corrupt == nil && st.Tick != 0 {
		a.book.publishedThrough(st.Tick)
	}
	if corrupt != nil {
		a.metrics.restoreErrors.Inc()
		a.log.Error("persisted merge state is unusable; continuing with this aggregator's own", "revision", rev, "err", corrupt)
	}
	attrs := []any{"instances", instances, "took", time.Since(start).Round(time.Microsecond)}
	if st != nil && corrupt == nil {
		attrs = append(attrs, "state_revision", rev, "state_bytes", len(data),
			"replayed", rs.reports, "replay_applied", rs.applied, "replay_stale", rs.stale)
	}
	a.log.Info("took over as leader", attrs...)
	return nil
}

// writeState persists the merge state under its key (StateKey by default), compare-and-set on the
// revision this leader last read or wrote: if another aggregator wrote in
// between, this one is no longer the only leader it thinks it is, so it
// stops publishing and, if it still holds the lease, takes over again from
// that newer state on the next tick.
func (a *Aggregator) writeState(ctx context.Context, st *State) {
	data, err := EncodeState(st)
	if err != nil {
		a.stateWriteFailed(err)
		return
	}
	if !a.elected() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, stateWriteTimeout)
	defer cancel()
	chunkSize := chunkSizeFor(a.cfg.NATS.MaxPayload())
	rev, gen, err := putState(ctx, a.stateKV, a.cfg.stateKey(), data, a.stateRev, chunkSize, stateWriter(a.cfg.ID), a.stateGen)
	switch {
	case err == nil:
		a.stateRev, a.stateGen = rev, gen
		a.stateSize.Store(int64(len(data)))
		a.stateChunks.Store(int64(chunksFor(len(data), chunkSize)))
		a.stateWritten.Store(a.cfg.Now().UnixNano())
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		a.active.Store(false)
		a.stateWriteFailed(fmt.Errorf("another aggregator wrote the merge state; taking over again: %w", err))
	case ctx.Err() != nil:
		// Stopping: the hand-over writes the final state.
	default:
		a.stateWriteFailed(fmt.Errorf("write merge state: %w", err))
	}
}

func (a *Aggregator) stateWriteFailed(err error) {
	a.metrics.stateErrors.Inc()
	if ok, suppressed := a.stateLog.allow(a.cfg.Now()); ok {
		a.log.Error("persist merge state", "err", err, "suppressed", suppressed)
	}
}

// handOver ends this aggregator's leadership when it stops: the merge state
// with every report it applied is persisted, then the lease is deleted, so
// that a follower takes over within its poll interval and continues exactly.
// It runs after report intake stopped; its operations have timeouts of their
// own, since Run's context has ended.
func (a *Aggregator) handOver() {
	ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
	defer cancel()
	if a.active.Load() && a.elector.Leading() {
		a.mu.Lock()
		st := a.mergeState()
		a.mu.Unlock()
		a.stateMu.Lock()
		a.writeState(ctx, &st)
		a.stateMu.Unlock()
	}
	a.active.Store(false)
	if err := a.elector.Resign(ctx); err != nil {
		a.log.Warn("resign leadership", "err", err)
	}
}
