//go:build linux

package benchmark

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// netns is a network namespace of the benchmark's own, with only a
// loopback interface. Processes started through it live in it, so a mode's
// server and client talk over a loopback that no host firewall, Docker
// rule or connection tracking touches, and that no other mode's sockets
// (in TIME_WAIT, say) share.
//
// Namespaces belong to threads: one goroutine, locked to the OS thread
// that unshared its namespace, runs every function given to do. When the
// namespace is closed that goroutine returns still locked, so the runtime
// discards the thread rather than reuse it elsewhere; the namespace itself
// lives on until its last process exits. The runtime never clones new
// threads from a locked one (it asks its template thread), so nothing else
// ends up inside.
type netns struct {
	reqs chan func()
	done chan struct{}
}

// errNetnsPermission is why an isolated network is unavailable: unsharing
// a network namespace needs CAP_SYS_ADMIN.
var errNetnsPermission = errors.New("creating a network namespace needs CAP_SYS_ADMIN (run as root)")

// newNetns creates a network namespace and brings its loopback up.
func newNetns() (*netns, error) {
	n := &netns{reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go n.run(ready)
	if err := <-ready; err != nil {
		<-n.done
		return nil, err
	}
	return n, nil
}

func (n *netns) run(ready chan<- error) {
	defer close(n.done)
	runtime.LockOSThread()
	// No UnlockOSThread: the thread must die with this goroutine.
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		if errors.Is(err, unix.EPERM) {
			err = errNetnsPermission
		}
		ready <- fmt.Errorf("create network namespace: %w", err)
		return
	}
	if err := loopbackUp(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for f := range n.reqs {
		f()
	}
}

// do runs f inside the namespace and returns its error.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	n.reqs <- func() { errc <- f() }
	return <-errc
}

// start starts cmd inside the namespace: a fork inherits the calling
// thread's namespaces.
func (n *netns) start(cmd *exec.Cmd) error { return n.do(cmd.Start) }

// close ends the goroutine (and its thread). Processes started in the
// namespace keep it alive until they exit.
func (n *netns) close() {
	close(n.reqs)
	<-n.done
}

// loopbackUp sets IFF_UP on "lo" in the calling thread's namespace; a new
// namespace's loopback already carries 127.0.0.1/8 but starts down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring loopback up: read flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	return nil
}
