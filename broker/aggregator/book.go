package aggregator

import (
	"math"
	"sync"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

const (
	// pendingKeep is how long a follower keeps a rollup it computed but has
	// not seen published, to publish it should it take over. It stays well
	// inside history.RollupDuplicateWindow, so a re-publish is deduplicated.
	pendingKeep = 3 * time.Minute
	// scopeKeep is how long a scope without snapshots stays in the book.
	scopeKeep = 5 * time.Minute
	// noMinute is "no minute yet".
	noMinute = math.MinInt64
)

// book follows what was published, by whichever aggregator led: every
// aggregator feeds it the live snapshots and rollups it sees on NATS, and the
// leader the ones it publishes itself. From that it knows, per scope, the
// newest second already published (so that a new leader never publishes a
// second twice) and it builds each minute's rollup from the published
// seconds (so that a rollup spans a failover). It is safe for concurrent use.
type book struct {
	mu     sync.Mutex
	scopes map[string]*scopeBook
	// floor: every second up to it counts as published in every scope. A
	// new leader sets it from the persisted state, which it may have read
	// before it saw the old leader's last snapshots (a full restart).
	floor int64
	// maxRate bounds the counters held (see plausibleHold); 0: no bound.
	maxRate int64
	refused uint64 // holds refused as implausible
	key     []byte // claim's scratch
}

// appendScopeKey appends scope.String().
func appendScopeKey(dst []byte, scope proto.Scope) []byte {
	switch scope.Kind {
	case proto.ScopeRegion:
		dst = append(dst, "region."...)
	case proto.ScopeInstance:
		dst = append(dst, "instance."...)
	default:
		return append(dst, "cluster"...)
	}
	return append(dst, scope.Name...)
}

type scopeBook struct {
	kind    proto.ScopeKind
	last    int64  // newest second published
	counts  Totals // its cumulative counters
	hasLast bool
	base    *proto.Snapshot // newest snapshot of the newest closed minute
	closed  int64           // newest minute closed
	rolled  int64           // newest minute whose rollup is known published
	open    []*rollupBuilder
	pending []proto.Snapshot // closed, newer than rolled, oldest first
}

func newBook() *book { return &book{scopes: make(map[string]*scopeBook), floor: math.MinInt64} }

// publishedThrough records that every second up to sec is published.
func (b *book) publishedThrough(sec int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.floor = max(b.floor, sec)
}

func (b *book) scope(key string, kind proto.ScopeKind) *scopeBook {
	sb := b.scopes[key]
	if sb == nil {
		sb = &scopeBook{kind: kind, last: noMinute, closed: noMinute, rolled: noMinute}
		b.scopes[key] = sb
	}
	return sb
}

// claim records snapshot s as published and reports true, unless a snapshot
// of its scope at the same or a later second was published already.
//
// It also keeps the scope's cumulative counters from going down. The merge
// never lowers them, but a new leader can only be as complete as the reports
// it received: had NATS dropped, for this aggregator alone, a report the old
// leader applied after its last state write, the new leader's totals would
// trail what was published until that instance reports again. Then claim
// holds s's counters (total, success, error, and the duration sum and count
// with them, so they stay consistent) at the published ones, and reports
// held; they catch up with the instance's next cumulative report.
func (b *book) claim(s *proto.Snapshot) (claimed, held bool) {
	sec := s.Time.Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	if sec <= b.floor {
		return false, false
	}
	// Looked up without building the key (Scope.String) every second for
	// every scope; built only for a new one.
	b.key = appendScopeKey(b.key[:0], s.Scope)
	sb := b.scopes[string(b.key)]
	if sb == nil {
		sb = b.scope(string(b.key), s.Scope.Kind)
	}
	if sec <= sb.last {
		return false, false
	}
	c := &sb.counts
	if sb.hasLast && (s.RequestsTotal < c.RequestsTotal || s.RequestsSuccess < c.RequestsSuccess ||
		s.RequestsError < c.RequestsError || s.DurationCount < c.DurationCount) && b.plausibleHold(s, c) {
		s.RequestsTotal, s.RequestsSuccess, s.RequestsError = c.RequestsTotal, c.RequestsSuccess, c.RequestsError
		s.DurationSumNanos, s.DurationCount = c.DurationSumNanos, c.DurationCount
		s.SuccessRate = proto.SuccessRateOf(c.RequestsSuccess, c.RequestsTotal)
		held = true
	}
	sb.last, sb.hasLast = sec, true
	*c = Totals{
		RequestsTotal: s.RequestsTotal, RequestsSuccess: s.RequestsSuccess, RequestsError: s.RequestsError,
		DurationSumNanos: s.DurationSumNanos, DurationCount: s.DurationCount,
	}
	m := minuteOf(sec)
	if m <= sb.closed {
		return true, held // too late for its rollup
	}
	for _, rb := range sb.open {
		if rb.minute == m {
			rb.add(s)
			return true, held
		}
	}
	// Seconds only grow, so a new minute is the newest: open stays sorted.
	// Its histogram will likely span the last one's buckets: sized for them
	// at once, it does not grow bucket by bucket in its first seconds.
	rb := &rollupBuilder{minute: m}
	if n := len(sb.open); n > 0 {
		rb.latency.Buckets = make([]proto.HistBucket, 0, len(sb.open[n-1].latency.Buckets)*5/4)
	}
	rb.start(s)
	sb.open = append(sb.open, rb)
	return true, held
}

// rolledUp records a rollup seen published.
func (b *book) rolledUp(r *proto.Snapshot) {
	m := r.Time.Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	sb := b.scope(r.Scope.String(), r.Scope.Kind)
	if m > sb.rolled {
		sb.rolled = m
		sb.dropPending()
	}
}

func (sb *scopeBook) dropPending() {
	i := 0
	for i < len(sb.pending) && sb.pending[i].Time.Unix() <= sb.rolled {
		i++
	}
	sb.pending = append(sb.pending[:0], sb.pending[i:]...)
}

// close closes every minute before now's, turning it into a pending rollup,
// and forgets stale pending rollups and scopes.
func (b *book) close(now time.Time) {
	cur := minuteOf(now.Unix())
	oldest := now.Add(-pendingKeep).Unix()
	gone := now.Add(-scopeKeep).Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, sb := range b.scopes {
		n := 0
		for _, rb := range sb.open {
			if rb.minute >= cur {
				break
			}
			r := rb.result(sb.base)
			sb.base = &rb.last
			sb.closed = rb.minute
			if rb.minute > sb.rolled {
				sb.pending = append(sb.pending, r)
			}
			n++
		}
		sb.open = append(sb.open[:0], sb.open[n:]...)
		for len(sb.pending) > 0 && sb.pending[0].Time.Unix() < oldest {
			sb.pending = sb.pending[1:]
		}
		if sb.last < gone && len(sb.open) == 0 && len(sb.pending) == 0 {
			delete(b.scopes, key)
		}
	}
}

// appendPending appends the pending rollups to dst, for the leader to
// publish; it marks each published with rolledUp. Without instances, it
// leaves the instance scopes' out (see takeInstancePending).
func (b *book) appendPending(dst []proto.Snapshot, instances bool) []proto.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, sb := range b.scopes {
		if instances || sb.kind != proto.ScopeInstance {
			dst = append(dst, sb.pending...)
		}
	}
	return dst
}

// takeInstancePending appends the instance scopes' pending rollups to dst
// and marks them rolled up: the leader's rollup writer owns them from then
// on (rollwriter.go).
func (b *book) takeInstancePending(dst []proto.Snapshot) []proto.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, sb := range b.scopes {
		if sb.kind != proto.ScopeInstance || len(sb.pending) == 0 {
			continue
		}
		dst = append(dst, sb.pending...)
		sb.rolled = sb.pending[len(sb.pending)-1].Time.Unix()
		clear(sb.pending)
		sb.pending = sb.pending[:0]
	}
	return dst
}
