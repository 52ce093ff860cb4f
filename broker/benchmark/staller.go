//go:build linux

package benchmark

import (
	"sync"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// staller holds the slow subscribers. Each has the smallest receive
// buffer the kernel allows, and the staller reads nothing for SlowStall,
// then everything that arrived, and so on: a client that is periodically
// too busy to read (a background tab, a laptop lid). With the server's send
// buffers at their minimum too, a few Snapshots fill both buffers and the
// server must decide what to do with the rest: the edge conflates them, the
// baseline's writer blocks and its ticker drops ticks, the raw loop gives
// the connection up. Their Snapshots are counted, not timed.
//
// The staller's goroutine owns the connections; the counters are guarded
// by mu for the report.
type staller struct {
	cl    *client
	stall time.Duration
	inbox chan *subConn
	done  chan struct{}
	conns []*subConn
	buf   []byte

	mu        sync.Mutex
	snapshots uint64 // read at or after the window start
	closed    uint64
	problem   string
}

func newStaller(cl *client, stall time.Duration) *staller {
	return &staller{
		cl: cl, stall: stall,
		inbox: make(chan *subConn, 64),
		done:  make(chan struct{}),
		buf:   make([]byte, 64<<10),
	}
}

// hand gives c to the staller; false when the client is stopping.
func (s *staller) hand(c *subConn, stop <-chan struct{}) bool {
	select {
	case s.inbox <- c:
		return true
	case <-stop:
		return false
	}
}

func (s *staller) run(stop <-chan struct{}) {
	defer close(s.done)
	t := time.NewTicker(s.stall)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case c := <-s.inbox:
			s.conns = append(s.conns, c)
		case <-t.C:
			s.drainAll()
		}
	}
}

// drainAll reads everything every open connection holds.
func (s *staller) drainAll() {
	now := s.cl.mono()
	inWindow := now >= s.cl.w0.Load()
	var snaps, closed uint64
	problem := ""
	for _, c := range s.conns {
		if c.closed {
			continue
		}
		n, gone, err := s.drain(c)
		if inWindow {
			snaps += n
		}
		if gone {
			c.closed = true
			closed++
			if err != nil && problem == "" {
				problem = err.Error()
			}
		}
	}
	s.mu.Lock()
	s.snapshots += snaps
	s.closed += closed
	if s.problem == "" {
		s.problem = problem
	}
	s.mu.Unlock()
}

// drain reads c until the socket is empty and counts the Snapshot frames;
// gone reports that the server closed it (err says how, if not cleanly).
func (s *staller) drain(c *subConn) (snaps uint64, gone bool, err error) {
	for {
		n, rerr := unix.Read(c.fd, s.buf)
		switch {
		case rerr == unix.EINTR:
			continue
		case rerr == unix.EAGAIN:
			return snaps, false, nil
		case rerr != nil || n == 0:
			return snaps, true, errOrEOF(rerr)
		}
		data := append(c.partial, s.buf[:n]...)
		closing := false
		used, perr := parseFrames(data, func(op ws.OpCode, p []byte) bool {
			switch {
			case op == ws.OpClose:
				closing = true
				return false
			case op == ws.OpText && eventKindOf(p) == kindSnapshot:
				snaps++
			}
			return true
		})
		if perr != nil {
			return snaps, true, perr
		}
		if closing {
			return snaps, true, nil
		}
		c.partial = append(c.partial[:0], data[used:]...)
	}
}

// tally returns what the slow subscribers saw.
func (s *staller) tally() (snapshots, closed uint64, problem string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshots, s.closed, s.problem
}

// close closes the connections; run must have returned.
func (s *staller) close() {
	for _, c := range s.conns {
		unix.Close(c.fd)
	}
	s.conns = nil
}
