package edge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/meridian-metrics/meridian/proto"
)

// Interest. Aggregators publish an instance's snapshots every second only
// while some edge announces interest in it (proto.Interest), so the edge
// announces, every interestEvery and at once when a client starts following
// a new instance, the instances it follows (follow.go): those its
// connections are subscribed to, and for FollowGrace after the last one
// left. An instance a client names that the edge does not hold is probed:
// followed and announced at once, and known if its first live snapshot
// arrives within probeWait (else it is looked up in history as before).
const (
	interestEvery = time.Second
	// interestTTL is how long an aggregator keeps publishing after the last
	// announcement: several announcements may be lost before a followed
	// instance stops.
	interestTTL = 5 * time.Second
	// probeWait bounds how long a handshake or subscription waits for the
	// first snapshot of an instance it probes: the aggregator publishes at
	// its next tick, within a second of the announcement.
	probeWait = 2500 * time.Millisecond
	// probePoll is how often a probe looks for that snapshot.
	probePoll = 20 * time.Millisecond
)

// interestAnnouncer holds the edge's announcement state. Its nudge channel
// asks the announce loop to announce now.
type interestAnnouncer struct {
	id     string
	nudge  chan struct{} // capacity 1
	mu     sync.Mutex
	probes map[string]time.Time // instance → end of its probe
	// failing is owned by the follow loop.
	failing failureLog
}

func newInterestAnnouncer() interestAnnouncer {
	return interestAnnouncer{id: "edge-" + nuid.Next(), nudge: make(chan struct{}, 1), probes: map[string]time.Time{}}
}

func (ia *interestAnnouncer) poke() {
	select {
	case ia.nudge <- struct{}{}:
	default:
	}
}

// probing adds the live probes to names and forgets the ended ones.
func (ia *interestAnnouncer) probing(names []string, now time.Time) []string {
	ia.mu.Lock()
	defer ia.mu.Unlock()
	for name, until := range ia.probes {
		if now.After(until) {
			delete(ia.probes, name)
			continue
		}
		names = append(names, name)
	}
	return names
}

// pinnedInstances appends the instances some connection is subscribed to.
func (t *scopeTable) pinnedInstances(dst []string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, st := range t.m {
		if k.Kind == proto.ScopeInstance && st.pins.Load() > 0 {
			dst = append(dst, k.Name)
		}
	}
	return dst
}

// announceFollowed announces interest in the followed instances (the
// follow loop calls it every round).
func (e *Edge) announceFollowed(names []string) {
	e.interest.failing.note(e.log, e.announce(names),
		"announce instance interest; aggregators stop publishing followed instances until it works again",
		"announcing instance interest again")
}

// announce publishes names in messages of at most proto.MaxInterestInstances.
func (e *Edge) announce(names []string) error {
	for len(names) > 0 {
		n := min(len(names), proto.MaxInterestInstances)
		in := proto.Interest{Version: proto.InterestVersion, Edge: e.interest.id, Instances: names[:n], TTL: interestTTL}
		data, err := in.Encode()
		if err != nil {
			return fmt.Errorf("encode interest: %w", err)
		}
		if err := e.cfg.NATS.Publish(proto.InterestSubject, data); err != nil {
			return fmt.Errorf("publish interest: %w", err)
		}
		names = names[n:]
	}
	return nil
}

// probeInstance announces interest in an instance the edge has not seen
// and waits up to probeWait for its first live snapshot. It returns the
// scope's state pinned, or nil.
func (e *Edge) probeInstance(ctx context.Context, scope proto.Scope) *scopeState {
	e.interest.mu.Lock()
	e.interest.probes[scope.Name] = e.cfg.Now().Add(probeWait)
	e.interest.mu.Unlock()
	e.interest.poke()
	deadline := time.NewTimer(probeWait)
	defer deadline.Stop()
	poll := time.NewTicker(probePoll)
	defer poll.Stop()
	for {
		if st := e.scopes.pin(scope); st != nil {
			if st.latest.Load() != nil {
				return st
			}
			st.release()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline.C:
			return nil
		case <-poll.C:
		}
	}
}
