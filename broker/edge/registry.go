package edge

import (
	"context"
	"sync"
)

// registry holds the open connections. Each gets an id of slot index and
// generation: epoll reports the id, and an event that arrives after its
// connection closed (and the fd number was reused) finds a different
// generation and is dropped.
type registry struct {
	mu     sync.Mutex
	slots  []*conn
	gens   []uint32
	free   []uint32
	n      int
	sealed bool          // shutting down: no more adds
	empty  chan struct{} // closed when n reaches 0, if someone waits
}

func connID(idx, gen uint32) uint64 { return uint64(gen)<<32 | uint64(idx) }

// add registers c and sets c.id; false once sealed.
func (r *registry) add(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed {
		return false
	}
	var idx uint32
	if k := len(r.free); k > 0 {
		idx = r.free[k-1]
		r.free = r.free[:k-1]
	} else {
		idx = uint32(len(r.slots))
		r.slots = append(r.slots, nil)
		r.gens = append(r.gens, 0)
	}
	r.gens[idx]++
	r.slots[idx] = c
	c.id = connID(idx, r.gens[idx])
	c.registered = true
	r.n++
	return true
}

// seal refuses further adds and returns the registered connections: after
// it, the set only shrinks.
func (r *registry) seal() []*conn {
	r.mu.Lock()
	r.sealed = true
	r.mu.Unlock()
	return r.all()
}

// remove unregisters c; it is a no-op for a connection never added.
func (r *registry) remove(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !c.registered {
		return
	}
	c.registered = false
	idx := uint32(c.id)
	r.slots[idx] = nil
	r.free = append(r.free, idx)
	r.n--
	if r.n == 0 && r.empty != nil {
		close(r.empty)
		r.empty = nil
	}
}

// get returns the connection with id, or nil.
func (r *registry) get(id uint64) *conn {
	idx := uint32(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if int(idx) >= len(r.slots) || r.gens[idx] != uint32(id>>32) {
		return nil
	}
	return r.slots[idx]
}

// len is the number of open connections.
func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// all copies the open connections.
func (r *registry) all() []*conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*conn, 0, r.n)
	for _, c := range r.slots {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// each calls f for every open connection with the registry locked; f must
// not block or call back into the registry.
func (r *registry) each(f func(*conn)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.slots {
		if c != nil {
			f(c)
		}
	}
}

// waitEmpty waits until no connection is registered or ctx ends.
func (r *registry) waitEmpty(ctx context.Context) error {
	r.mu.Lock()
	if r.n == 0 {
		r.mu.Unlock()
		return nil
	}
	if r.empty == nil {
		r.empty = make(chan struct{})
	}
	ch := r.empty
	r.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
