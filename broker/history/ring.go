package history

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Ring is a bounded, time-ordered window of one scope's snapshots, at most
// one per timestamp. Appending the newest snapshot is O(1); inserting an
// older one (backfill from the stream after live data started) is O(n) and
// meant to be rare.
type Ring struct {
	mu    sync.RWMutex
	buf   []proto.Snapshot // circular, capacity len(buf)
	start int              // index of the oldest
	n     int
}

// NewRing returns a Ring holding at most capacity snapshots (at least 1).
func NewRing(capacity int) *Ring {
	return &Ring{buf: make([]proto.Snapshot, max(capacity, 1))}
}

func (r *Ring) at(i int) *proto.Snapshot { return &r.buf[(r.start+i)%len(r.buf)] }

// Add inserts s in time order; a snapshot with the same Time replaces the
// one held. When full, the oldest is dropped (or s, if it is older than all).
func (r *Ring) Add(s proto.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 {
		last := r.at(r.n - 1)
		switch {
		case s.Time.Equal(last.Time):
			*last = s
			return
		case s.Time.Before(last.Time):
			r.insertSlow(s)
			return
		}
	}
	if r.n < len(r.buf) {
		*r.at(r.n) = s
		r.n++
		return
	}
	r.buf[r.start] = s
	r.start = (r.start + 1) % len(r.buf)
}

func (r *Ring) insertSlow(s proto.Snapshot) {
	all := r.linear()
	i := sort.Search(len(all), func(i int) bool { return !all[i].Time.Before(s.Time) })
	if i < len(all) && all[i].Time.Equal(s.Time) {
		all[i] = s
	} else {
		if i == 0 && r.n == len(r.buf) {
			return // older than everything in a full ring
		}
		all = slices.Insert(all, i, s)
		if len(all) > len(r.buf) {
			all = all[1:]
		}
	}
	copy(r.buf, all)
	r.start, r.n = 0, len(all)
}

// linear copies the contents oldest first.
func (r *Ring) linear() []proto.Snapshot {
	out := make([]proto.Snapshot, r.n, r.n+1)
	for i := 0; i < r.n; i++ {
		out[i] = *r.at(i)
	}
	return out
}

// Len is the number of snapshots held.
func (r *Ring) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// Latest returns the newest snapshot.
func (r *Ring) Latest() (proto.Snapshot, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.n == 0 {
		return proto.Snapshot{}, false
	}
	return *r.at(r.n - 1), true
}

// Range copies the snapshots with since <= Time <= until, oldest first.
func (r *Ring) Range(since, until time.Time) []proto.Snapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	lo := sort.Search(r.n, func(i int) bool { return !r.at(i).Time.Before(since) })
	hi := sort.Search(r.n, func(i int) bool { return r.at(i).Time.After(until) })
	if lo >= hi {
		return nil
	}
	out := make([]proto.Snapshot, hi-lo)
	for i := lo; i < hi; i++ {
		out[i-lo] = *r.at(i)
	}
	return out
}
