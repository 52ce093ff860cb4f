package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// Replays: a subscription with since receives the scope's snapshots with
// Time > since, oldest first, before any live one. They come from the
// scope's ring when it reaches back to since (the usual reconnect), else
// from the 1 s history stream for the part before the ring. At most
// MaxReplaySnapshots are replayed: the newest ones, so that the replay runs
// into the live snapshots without a gap; when older ones were left out, an
// Error event before the replay says from when it starts.

// replayResult is what a replay sends.
type replayResult struct {
	snaps     []proto.Snapshot
	truncated bool // snapshots after since and before snaps[0] exist but are not replayed
}

// replay collects the snapshots of sh's scope after since. anchor is the
// scope's newest snapshot time (zero: unknown).
func (h *historyServer) replay(ctx context.Context, sh *scopeHistory, anchor, since time.Time) (replayResult, error) {
	after := since.Add(time.Nanosecond)
	mem, covered := sh.view(after)
	var res replayResult
	clipped := false
	snaps := mem
	if !covered {
		// The ring starts after since: read the part before it from the
		// stream, no further back than the cap needs (one per second).
		newest := anchor
		if len(mem) > 0 {
			newest = mem[len(mem)-1].Time
		}
		if newest.IsZero() {
			newest = h.now()
		}
		from := after
		if floor := newest.Add(-time.Duration(h.maxReplay-1) * time.Second); floor.After(from) {
			from, clipped = floor, true
		}
		var upTo time.Time // zero: up to now
		if len(mem) > 0 {
			upTo = mem[0].Time.Add(-time.Nanosecond)
		}
		if upTo.IsZero() || !from.After(upTo) {
			old, err := history.LoadRange(ctx, h.js, proto.HistoryStream, proto.SnapshotSubject(sh.scope), from, upTo, h.maxReplay)
			if err != nil && !noHistory(err) {
				return res, fmt.Errorf("read history of %s: %w", sh.scope, err)
			}
			if len(old) > 0 {
				snaps = append(old, mem...)
			}
		}
	}
	switch {
	case len(snaps) > h.maxReplay:
		snaps = snaps[len(snaps)-h.maxReplay:]
		res.truncated = true
	case clipped:
		before := endOfTime
		if len(snaps) > 0 {
			before = snaps[0].Time
		}
		skipped, err := h.skippedBetween(ctx, sh.scope, since, before)
		if err != nil {
			return res, err
		}
		res.truncated = skipped
	}
	res.snaps = snaps
	return res, nil
}

// probeLimit bounds the messages skippedBetween examines.
const probeLimit = 1024

// skippedBetween reports whether the history stream holds a snapshot of
// scope with since < Time < before. It reads in store order from since-5s
// (store time trails snapshot time by the publish latency, so nothing newer
// than since was stored earlier) and stops at the first such snapshot, at
// the first stored too late to be a refill of a second before before, or
// after probeLimit messages.
func (h *historyServer) skippedBetween(ctx context.Context, scope proto.Scope, since, before time.Time) (bool, error) {
	from := since.Add(-5 * time.Second)
	cons, err := h.js.OrderedConsumer(ctx, proto.HistoryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{proto.SnapshotSubject(scope)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if noHistory(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe history of %s: %w", scope, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("probe history of %s: %w", scope, err)
	}
	pending := info.NumPending
	// Refilled seconds are stored after newer ones, up to MaxRefillLag late.
	stop := before.Add(5*time.Second + history.MaxRefillLag)
	for seen := 0; pending > 0 && seen < probeLimit; {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return false, fmt.Errorf("probe history of %s: %w", scope, err)
		}
		got, done, found := 0, false, false
		for msg := range batch.Messages() {
			got++
			var stored time.Time
			if md, err := msg.Metadata(); err == nil {
				pending, stored = md.NumPending, md.Timestamp
			}
			s, err := proto.DecodeSnapshot(msg.Data())
			switch {
			case err != nil || done:
			case stored.After(stop):
				done = true
			case s.Time.After(since) && s.Time.Before(before):
				found, done = true, true
			}
		}
		cancel()
		if found || done {
			return found, nil
		}
		if err := batch.Error(); err != nil && got == 0 && !errors.Is(err, context.DeadlineExceeded) {
			return false, fmt.Errorf("probe history of %s: %w", scope, err)
		}
		if got == 0 {
			break
		}
		seen += got
	}
	return false, nil
}

// replayBlob encodes snaps as consecutive Snapshot frames carrying set,
// appended to dst: one buffer, one queue entry, written with as few
// syscalls as the socket allows.
func replayBlob(dst []byte, snaps []proto.Snapshot, set proto.MetricSet) []byte {
	// Frames must be contiguous, so each payload is encoded into a scratch
	// buffer first and copied behind its exact-size header.
	var hdr [maxServerHeader]byte
	var payload []byte
	for i := range snaps {
		payload = proto.AppendSnapshotEvent(payload[:0], &snaps[i], set)
		if i == 0 {
			dst = slices.Grow(dst, len(snaps)*(len(payload)+maxServerHeader+8))
		}
		h := frameHeaderLen(len(payload))
		putFrameHeader(hdr[:h], ws.OpText, len(payload))
		dst = append(dst, hdr[:h]...)
		dst = append(dst, payload...)
	}
	return dst
}

// truncationMessage is the Error event sent before a truncated replay.
func truncationMessage(scope proto.Scope, since time.Time, max int, snaps []proto.Snapshot) string {
	ts := func(t time.Time) string { return string(proto.AppendTimestamp(nil, t)) }
	if len(snaps) == 0 {
		return fmt.Sprintf("replay truncated: at most %d snapshots are replayed, and the snapshots of %s after %s are no longer available",
			max, scope, ts(since))
	}
	return fmt.Sprintf("replay truncated: at most %d snapshots are replayed; the snapshots of %s after %s and before %s are not replayed, the replay starts at %s",
		max, scope, ts(since), ts(snaps[0].Time), ts(snaps[0].Time))
}
