package scale

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-metrics/meridian/broker/benchmark/internal/tail"
)

// ErrProcess is returned when a child process fails to start, exits early or
// does not become ready in time.
var ErrProcess = errors.New("scale child process failed")

// proc is a child process of the harness (a `meridian` role) in its own
// process group, with the tail of its output kept for error messages.
type proc struct {
	name  string
	cmd   *exec.Cmd
	admin string // host:port of its /readyz and /metrics
	tail  *tail.Buffer
	done  chan struct{} // closed when it exited and was reaped
	err   error         // its exit status, once done
	once  sync.Once
}

// startProc starts cmd as the child name. Its environment drops every
// MERIDIAN_* variable, so that the harness's own settings (which the CLI
// reads from the environment) never leak into the roles' flags.
func startProc(name string, cmd *exec.Cmd, admin string, out io.Writer) (*proc, error) {
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = nil
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MERIDIAN_") || strings.HasPrefix(kv, "MERIDIAN_SCALE_TEST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	tail := tail.New(8 << 10)
	var w io.Writer = tail
	if out != nil {
		w = io.MultiWriter(tail, out)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start %s: %v", ErrProcess, name, err)
	}
	p := &proc{name: name, cmd: cmd, admin: admin, tail: tail, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) failed(what string) error {
	return fmt.Errorf("%w: %s: %s; its output ends:\n%s", ErrProcess, p.name, what, strings.TrimSpace(p.tail.String()))
}

// waitReady polls the child's /readyz until it answers 200.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("probe %s: %w", p.name, err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return p.failed(fmt.Sprintf("exited (%v) before it was ready", p.err))
		case <-ctx.Done():
			return p.failed(fmt.Sprintf("not ready within %s", timeout))
		case <-tick.C:
		}
	}
}

// kill ends the child at once (SIGKILL to its group), as a crash would.
func (p *proc) kill() {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// stop asks the child to stop (SIGTERM), waits up to grace, then kills its
// group. It is idempotent.
func (p *proc) stop(grace time.Duration) {
	p.once.Do(func() {
		_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
		}
		p.kill()
	})
}

// usage is a process's CPU time and resident memory at one moment.
type usage struct {
	At  time.Time
	CPU time.Duration // user + system, all threads
	RSS uint64        // bytes
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK), 100 on every Linux architecture Go supports).
const userHZ = 100

// readUsage reads /proc/<pid>/stat and /proc/<pid>/status.
func readUsage(pid int) (usage, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return usage{}, fmt.Errorf("read process usage: %w", err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return usage{}, fmt.Errorf("read process usage: %w", err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return usage{}, err
	}
	rss, err := parseStatusKB(status, "VmRSS:")
	if err != nil {
		return usage{}, err
	}
	return usage{At: time.Now(), CPU: cpu, RSS: rss}, nil
}

// parseStatCPU reads utime and stime (fields 14 and 15) of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/<pid>/stat: no command name in %.40q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/<pid>/stat: %d fields after the name", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/<pid>/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// parseStatusKB reads a "Key:   1234 kB" line of /proc/<pid>/status.
func parseStatusKB(status []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(key))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("parse /proc/<pid>/status %s %q", key, rest)
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/<pid>/status %s: %w", key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("parse /proc/<pid>/status: no %s line", key)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for a child that must be told its port up front.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}
