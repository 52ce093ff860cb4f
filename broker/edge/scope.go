package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// Scopes. Every scope the edge knows has one scopeState holding its newest
// snapshot, encoded lazily per metric set; a connection points at the state
// of its subscribed scope, so the shards deliver without a map lookup. A
// scope is known once a live snapshot of it arrived, or once a subscription
// named it and its last snapshot was found in the history or rollup stream
// (which then seeds the state: the cadence repeats it, and its timestamp
// tells its age, exactly as for a cluster snapshot that stopped changing).
//
// States are pinned by the connections subscribed to them (and by
// subscriptions being prepared); a state is forgotten only when nothing pins
// it and its newest snapshot is older than scopeTTL, so a connection's
// pointer always refers to the state that live snapshots go to.

// scopeState is one scope's newest snapshot.
type scopeState struct {
	scope  proto.Scope
	latest atomic.Pointer[snapFrames] // nil until the first snapshot
	pins   atomic.Int64
}

// retain adds a pin to a state the caller already holds pinned.
func (st *scopeState) retain() { st.pins.Add(1) }

// release drops a pin.
func (st *scopeState) release() { st.pins.Add(-1) }

// newestTime is the time of the newest snapshot held, or zero.
func (st *scopeState) newestTime() time.Time {
	if sf := st.latest.Load(); sf != nil {
		return sf.snap.Time
	}
	return time.Time{}
}

// scopeTable holds the scopeStates. The cluster's exists from the start
// and is never forgotten: it is the default scope.
type scopeTable struct {
	mu      sync.Mutex
	m       map[proto.Scope]*scopeState
	cluster *scopeState
	// firstGen grows whenever a scope receives its first snapshot: shards
	// then look again at the connections waiting for one.
	firstGen atomic.Uint64
}

func newScopeTable() *scopeTable {
	c := &scopeState{scope: proto.ClusterScope()}
	return &scopeTable{m: map[proto.Scope]*scopeState{c.scope: c}, cluster: c}
}

// store keeps s as its scope's newest snapshot unless one at least as new is
// held. first reports that the scope had no snapshot before.
func (t *scopeTable) store(s proto.Snapshot) (st *scopeState, ok, first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st = t.m[s.Scope]
	if st == nil {
		st = &scopeState{scope: s.Scope}
		t.m[s.Scope] = st
	}
	prev := st.latest.Load()
	if prev != nil && !s.Time.After(prev.snap.Time) {
		return st, false, false
	}
	st.latest.Store(newSnapFrames(s))
	if s.Scope.Kind == proto.ScopeCluster && len(t.m) > 1 {
		t.pruneLocked(s.Time)
	}
	if prev == nil {
		t.firstGen.Add(1)
	}
	return st, true, prev == nil
}

// pruneLocked forgets unpinned scopes silent for scopeTTL (departed
// instances): once a second, on the cluster's snapshot.
func (t *scopeTable) pruneLocked(now time.Time) {
	for k, st := range t.m {
		if st == t.cluster || st.pins.Load() > 0 {
			continue
		}
		if now.Sub(st.newestTime()) > scopeTTL {
			delete(t.m, k)
		}
	}
}

// pin returns the pinned state of scope, or nil when the scope is unknown.
func (t *scopeTable) pin(scope proto.Scope) *scopeState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[scope]
	if st != nil {
		st.pins.Add(1)
	}
	return st
}

// seed makes a scope found in history known, with s as its newest
// snapshot unless a newer one arrived live meanwhile, and returns it pinned.
func (t *scopeTable) seed(s proto.Snapshot) *scopeState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[s.Scope]
	if st == nil {
		st = &scopeState{scope: s.Scope}
		t.m[s.Scope] = st
	}
	if prev := st.latest.Load(); prev == nil || s.Time.After(prev.snap.Time) {
		st.latest.Store(newSnapFrames(s))
		if prev == nil {
			t.firstGen.Add(1)
		}
	}
	st.pins.Add(1)
	return st
}

// forget drops scope's state unless it is pinned, and reports whether the
// scope is no longer held. A pin taken after it finds nothing and looks the
// scope up afresh.
func (t *scopeTable) forget(scope proto.Scope) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[scope]
	if st == nil {
		return true
	}
	if st == t.cluster || st.pins.Load() > 0 {
		return false
	}
	delete(t.m, scope)
	return true
}

// get returns the state of scope without pinning it.
func (t *scopeTable) get(scope proto.Scope) *scopeState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[scope]
}

// scopes lists the scopes that have a snapshot.
func (t *scopeTable) scopes() []proto.Scope {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]proto.Scope, 0, len(t.m))
	for k, st := range t.m {
		if st.latest.Load() != nil {
			out = append(out, k)
		}
	}
	return out
}

// census counts, for the metrics, the scopes with a snapshot and the
// scopes pinned by at least one connection, by kind.
func (t *scopeTable) census() (known int, served [3]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, st := range t.m {
		if st.latest.Load() != nil {
			known++
		}
		if st.pins.Load() > 0 && int(k.Kind) < len(served) {
			served[k.Kind]++
		}
	}
	return known, served
}

// errUnknownScope is wrapped by resolveScope when a scope was neither seen
// live nor found in history.
var errUnknownScope = errors.New("unknown scope")

// resolveScope returns the pinned state of scope. A scope not seen live is
// looked up in the history and rollup streams; its last snapshot there makes
// it known. It may block on JetStream: never call it on the poller or a shard.
//
// A lookup that reaches the streams costs a token of en's address (nil: no
// limit), so unknown-scope probing cannot load JetStream.
func (e *Edge) resolveScope(ctx context.Context, scope proto.Scope, en *addrEntry) (*scopeState, error) {
	if scope.Kind == proto.ScopeInstance {
		// Announce the new follower at once rather than at the next round.
		defer e.interest.poke()
	}
	if st := e.scopes.pin(scope); st != nil {
		return st, nil
	}
	if en != nil {
		if wait := e.limits.take(en, bucketLookup); wait > 0 {
			return nil, &lookupLimitedError{wait: wait}
		}
	}
	// Lookups come from the workers and from handshakes: at most
	// HistoryWorkers of them reach JetStream at a time.
	select {
	case e.lookups <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("look up scope %s: %w", scope, ctx.Err())
	}
	s, ok, err := e.lastInHistory(ctx, scope)
	<-e.lookups
	if err != nil {
		return nil, err
	}
	if !ok && scope.Kind == proto.ScopeInstance {
		// Aggregators publish instances on demand: ask for this one.
		if st := e.probeInstance(ctx, scope); st != nil {
			return st, nil
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w %s", errUnknownScope, scope)
	}
	return e.scopes.seed(s), nil
}

// lastInHistory finds the newest snapshot of scope in the history stream,
// else the newest rollup. Without JetStream there is no history: not found.
func (e *Edge) lastInHistory(ctx context.Context, scope proto.Scope) (proto.Snapshot, bool, error) {
	sources := [...]struct{ stream, subject string }{
		{proto.HistoryStream, proto.SnapshotSubject(scope)},
		{proto.RollupStream, proto.RollupSubject(scope)},
	}
	for _, src := range sources {
		stream, err := e.js.Stream(ctx, src.stream)
		if noHistory(err) {
			continue
		}
		if err != nil {
			return proto.Snapshot{}, false, fmt.Errorf("look up scope %s in %s: %w", scope, src.stream, err)
		}
		msg, err := stream.GetLastMsgForSubject(ctx, src.subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return proto.Snapshot{}, false, fmt.Errorf("look up scope %s in %s: %w", scope, src.stream, err)
		}
		s, err := proto.DecodeSnapshot(msg.Data)
		if err != nil || s.Scope != scope {
			continue // a corrupt record is no evidence either way
		}
		return s, true, nil
	}
	return proto.Snapshot{}, false, nil
}

// noHistory reports errors meaning there is no such history at all: no
// stream, or no JetStream (which, on a single server, answers the API with
// no responders; jetstream's own AccountInfo reads it the same way).
func noHistory(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// historyScopes caches the scopes present in the history and rollup
// streams, for the list in unknown-scope errors.
type historyScopes struct {
	mu     sync.Mutex
	at     time.Time
	scopes []proto.Scope
}

// historyScopesTTL is how long the streams' subject lists are reused.
const historyScopesTTL = 30 * time.Second

// knownScopes lists every scope a subscription may name: those held live
// and those in the streams (read at most every 30 s), sorted cluster first,
// then regions, then instances.
func (e *Edge) knownScopes(ctx context.Context) []proto.Scope {
	seen := make(map[proto.Scope]bool)
	for _, s := range e.scopes.scopes() {
		seen[s] = true
	}
	seen[proto.ClusterScope()] = true
	for _, s := range e.streamScopes(ctx) {
		seen[s] = true
	}
	out := make([]proto.Scope, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b proto.Scope) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), strings.Compare(a.Name, b.Name))
	})
	return out
}

func (e *Edge) streamScopes(ctx context.Context) []proto.Scope {
	c := &e.histScopes
	c.mu.Lock()
	defer c.mu.Unlock()
	now := e.cfg.Now()
	if !c.at.IsZero() && now.Sub(c.at) < historyScopesTTL {
		return c.scopes
	}
	var out []proto.Scope
	complete := true
	for _, src := range [...]struct{ stream, prefix string }{
		{proto.HistoryStream, proto.SnapshotSubjectPrefix},
		{proto.RollupStream, proto.RollupSubjectPrefix},
	} {
		stream, err := e.js.Stream(ctx, src.stream)
		if noHistory(err) {
			continue
		}
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = stream.Info(ctx, jetstream.WithSubjectFilter(src.prefix+".>"))
		}
		if err != nil {
			complete = false
			continue
		}
		for subj := range info.State.Subjects {
			if s, err := proto.ParseScope(strings.TrimPrefix(subj, src.prefix+".")); err == nil {
				out = append(out, s)
			}
		}
	}
	if !complete {
		// A read that failed or ran out of time (a stream of 100 000
		// subjects on a loaded server) is not cached: the next error
		// tries again, and meanwhile the last complete list serves.
		if len(c.scopes) > len(out) {
			return c.scopes
		}
		return out
	}
	c.at, c.scopes = now, out
	return out
}

// maxListedScopes bounds the list in an unknown-scope error: beyond it,
// only the scopes closest to the one asked for are named, so that the
// error stays small at 100 000 instances (the full list is paginated by
// GET /api/metrics/list).
const maxListedScopes = 20

// unknownScopeMessage is the Error text (and 404 body) for a scope that is
// not known. Only scopes g allows are listed: a restricted token learns
// nothing of the others.
func (e *Edge) unknownScopeMessage(ctx context.Context, scope proto.Scope, g auth.Grant) string {
	known := e.knownScopes(ctx)
	if !g.All() {
		known = slices.DeleteFunc(slices.Clone(known), func(s proto.Scope) bool { return !g.Allows(s) })
	}
	prefix := fmt.Sprintf("unknown scope %s: no snapshot of it was seen live or is kept in history; ", scope)
	if len(known) <= maxListedScopes {
		return prefix + "known scopes: " + joinScopes(known)
	}
	closest := closestScopes(known, scope.String(), maxListedScopes)
	return fmt.Sprintf("%sknown scopes closest to it: %s and %d more; see GET /api/metrics/list",
		prefix, joinScopes(closest), len(known)-len(closest))
}

func joinScopes(scopes []proto.Scope) string {
	var b strings.Builder
	for i, s := range scopes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s.String())
	}
	return b.String()
}

// scopeErrorMessage turns a resolveScope error into client text.
func (e *Edge) scopeErrorMessage(ctx context.Context, scope proto.Scope, g auth.Grant, err error) string {
	if errors.Is(err, errUnknownScope) {
		return e.unknownScopeMessage(ctx, scope, g)
	}
	if errors.Is(err, errLookupRateLimited) {
		return err.Error()
	}
	return fmt.Sprintf("scope %s was not seen live and its history could not be searched (%v); try again later", scope, err)
}
