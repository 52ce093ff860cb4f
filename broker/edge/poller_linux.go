//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// poller is the one goroutine that reads every connection. Sockets are
// registered level-triggered for input, so a connection that sent more than
// one read takes is simply reported again on the next round: no connection
// can monopolise the loop, and nothing here ever blocks on a socket.
// EPOLLOUT is requested only while a connection has queued output.
type poller struct {
	e        *Edge
	epfd     int
	evfd     int // eventfd: wakes EpollWait for shutdown
	stopping atomic.Bool

	// Read state, owned by the poller goroutine.
	buf    []byte
	ps     parseScratch
	events [128]unix.EpollEvent
}

// wakeID is the event data of the eventfd; connection ids never have
// generation 0xffffffff with index 0xffffffff.
const wakeID = ^uint64(0)

// readBufSize is the most read from one socket per readiness report.
const readBufSize = 16 << 10

const baseEvents = unix.EPOLLIN | unix.EPOLLRDHUP

func newPoller(e *Edge) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("create eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("register eventfd: %w", err)
	}
	p := &poller{e: e, epfd: epfd, evfd: evfd, buf: make([]byte, readBufSize)}
	return p, nil
}

func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// add registers c (with c.mu held, c.id set).
func (p *poller) add(c *conn) error {
	ev := unix.EpollEvent{Events: baseEvents}
	if c.armed {
		ev.Events |= unix.EPOLLOUT
	}
	setEventID(&ev, c.id)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		return fmt.Errorf("epoll add fd %d: %w", c.fd, err)
	}
	return nil
}

// setWritable turns EPOLLOUT on or off for c (with c.mu held).
func (p *poller) setWritable(c *conn, on bool) {
	ev := unix.EpollEvent{Events: baseEvents}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	setEventID(&ev, c.id)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		p.e.log.Debug("epoll mod", "err", err)
	}
}

// remove unregisters c (with c.mu held, before its fd is closed).
func (p *poller) remove(c *conn) {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil); err != nil {
		p.e.log.Debug("epoll del", "err", err)
	}
}

// run dispatches readiness until stop is called.
func (p *poller) run() {
	for {
		n, err := unix.EpollWait(p.epfd, p.events[:], -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			p.e.log.Error("epoll wait failed; connections are no longer read", "err", err)
			return
		}
		for i := 0; i < n; i++ {
			ev := &p.events[i]
			id := eventID(ev)
			if id == wakeID {
				var b [8]byte
				_, _ = unix.Read(p.evfd, b[:])
				if p.stopping.Load() {
					return
				}
				continue
			}
			c := p.e.reg.get(id)
			if c == nil {
				continue // closed after the event was queued
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.onWritable()
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.read(c)
			}
		}
	}
}

// read takes one bufferful from c without blocking and feeds it to c.
func (p *poller) read(c *conn) {
	n, err := c.read(p.buf)
	switch {
	case n > 0:
		c.input(&p.ps, p.buf[:n])
	case err == unix.EAGAIN, errors.Is(err, net.ErrClosed):
	case err == nil:
		c.close(reasonPeerGone) // EOF
	default:
		c.close(reasonIOError)
	}
}

// stop makes run return.
func (p *poller) stop() {
	p.stopping.Store(true)
	one := [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
}

// close releases the epoll and eventfd descriptors, after run returned.
func (p *poller) close() {
	unix.Close(p.evfd)
	unix.Close(p.epfd)
}
