package integration

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// proc is a child process whose output lines the test can wait on.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{} // signalled on every new line
	done  chan struct{}
	err   error
}

// startProc runs name args, collecting stdout and stderr lines; the process
// is killed at cleanup if still running.
func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(name, args...), more: make(chan struct{}, 1), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var readers sync.WaitGroup
	readers.Go(func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
	})
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		readers.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, strings.Join(p.output(), "\n"))
		}
	})
	return p
}

func (p *proc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits until some line matches re and returns its submatches.
func (p *proc) waitLine(timeout time.Duration, re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		lines := p.output()
		for ; seen < len(lines); seen++ {
			if m := re.FindStringSubmatch(lines[seen]); m != nil {
				return m
			}
		}
		select {
		case <-p.more:
		case <-p.done:
			if len(p.output()) == seen {
				p.t.Fatalf("process exited (%v) before printing a line matching %s", p.err, re)
			}
		case <-deadline.C:
			p.t.Fatalf("no line matching %s within %s", re, timeout)
		}
	}
}

// countLines counts lines matching re so far.
func (p *proc) countLines(re *regexp.Regexp) int {
	n := 0
	for _, l := range p.output() {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("process did not exit within %s", timeout)
		return nil
	}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// meridianBinary builds ./cmd/meridian once per test run.
func meridianBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meridian-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "meridian")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.CommandContext(context.Background(), "go", "build", "-o", buildPath, "./cmd/meridian")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			buildPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/meridian: %v\n%s", buildErr, buildPath)
	}
	return buildPath
}

func errorAs(err error, target any) bool { return errors.As(err, target) }

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
