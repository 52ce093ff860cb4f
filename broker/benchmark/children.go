package benchmark

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-metrics/meridian/broker/benchmark/internal/tail"
)

// child is a running child process and the harness's end of its JSON-line
// protocol. The stdout reader goroutine is owned by the child and joined by
// stop, which every path that started a child calls.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte   // stdout lines; closed at EOF
	quit   chan struct{} // closed by stop: lines are discarded from then on
	eof    chan struct{} // closed when stdout is done
	stderr *tail.Buffer
	grace  time.Duration // see stop
	once   sync.Once
}

// ErrChildFailed is returned when a child process reports an error, exits
// early or does not answer in time.
var ErrChildFailed = errors.New("benchmark child failed")

// stopGrace is how long a child may take to exit after its stdin closes
// before its process group is killed.
const stopGrace = 15 * time.Second

// startChild starts a child in its own process group, through start (which
// is (*exec.Cmd).Start or a namespace's), and sends it spec.
func startChild(name string, newCmd func() *exec.Cmd, start func(*exec.Cmd) error, stderr io.Writer, spec childSpec) (*child, error) {
	cmd := newCmd()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Its own group: the harness kills it whole, and a terminal's Ctrl-C
	// reaches only the harness, which then stops the children in order.
	cmd.SysProcAttr.Setpgid = true
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	tail := tail.New(16 << 10)
	cmd.Stderr = tail
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(tail, stderr)
	}
	if err := start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan []byte, 16), quit: make(chan struct{}), eof: make(chan struct{}), stderr: tail, grace: stopGrace}
	go c.readLines(stdout)
	if err := c.send(spec); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func (c *child) readLines(stdout io.Reader) {
	defer close(c.eof)
	defer close(c.lines)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for sc.Scan() {
		select {
		case c.lines <- append([]byte(nil), sc.Bytes()...):
		case <-c.quit:
		}
	}
	// Drain what is left so that the child never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, stdout)
}

func (c *child) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message to %s: %w", c.name, err)
	}
	if _, err := c.stdin.Write(append(b, '\n')); err != nil {
		return c.failed(fmt.Sprintf("write to it: %v", err))
	}
	return nil
}

// recv waits up to timeout for the child's next message, which must be of
// event want.
func (c *child) recv(ctx context.Context, want string, timeout time.Duration) (message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return message{}, fmt.Errorf("wait for %s %s: %w", c.name, want, ctx.Err())
	case <-t.C:
		return message{}, c.failed(fmt.Sprintf("no %q within %s", want, timeout))
	case line, ok := <-c.lines:
		if !ok {
			return message{}, c.failed(fmt.Sprintf("exited before %q", want))
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			return message{}, c.failed(fmt.Sprintf("unreadable line %q", line))
		}
		if m.Event == evError {
			return message{}, c.failed(m.Error)
		}
		if m.Event != want {
			return message{}, c.failed(fmt.Sprintf("sent %q, want %q", m.Event, want))
		}
		return m, nil
	}
}

// call sends cmd and waits for the reply.
func (c *child) call(ctx context.Context, cmd command, want string, timeout time.Duration) (message, error) {
	if err := c.send(cmd); err != nil {
		return message{}, err
	}
	return c.recv(ctx, want, timeout)
}

func (c *child) failed(what string) error {
	msg := fmt.Sprintf("%s: %s", c.name, what)
	if tail := strings.TrimSpace(c.stderr.String()); tail != "" {
		msg += "; its stderr ends:\n" + tail
	}
	return fmt.Errorf("%w: %s", ErrChildFailed, msg)
}

// stop closes the child's stdin (it then shuts down and exits), waits up
// to its grace period (stopGrace) for that, kills its whole process group in any case (a
// no-op when it is gone; until it is reaped its pid cannot be reused), and
// reaps it. It is idempotent.
func (c *child) stop() {
	c.once.Do(func() {
		close(c.quit)
		_ = c.stdin.Close()
		t := time.NewTimer(c.grace)
		select {
		case <-c.eof:
		case <-t.C:
		}
		t.Stop()
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.eof
		_ = c.cmd.Wait()
	})
}
