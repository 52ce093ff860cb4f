package collector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/collector"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// tailer runs a LogSource over a file the test writes like a gateway would.
type tailer struct {
	t      *testing.T
	path   string
	src    *collector.LogSource
	cancel context.CancelFunc
	done   chan struct{}
}

func startTailer(t *testing.T, path string, cp *checkpointed) *tailer {
	t.Helper()
	p, err := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxCombined})
	if err != nil {
		t.Fatal(err)
	}
	src, err := collector.NewLogSource(collector.LogConfig{
		Path: path, Parser: p, Recorder: new(gateway.Recorder), FromStart: true,
		PollInterval: 5 * time.Millisecond, RotateWait: 50 * time.Millisecond, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if cp != nil {
		if err := src.Restore(cp.c, cp.state); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailer{t: t, path: path, src: src, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		src.Run(ctx)
	}()
	t.Cleanup(tl.stop)
	return tl
}

type checkpointed struct {
	c     proto.Counters
	state json.RawMessage
}

func (tl *tailer) stop() {
	tl.cancel()
	<-tl.done
}

// waitCounts waits until the source has counted exactly ok successes and bad
// errors, failing at once if it counts more.
func (tl *tailer) waitCounts(ok, bad uint64) proto.Counters {
	tl.t.Helper()
	var c proto.Counters
	wait.For(tl.t, 20*time.Second, fmt.Sprintf("%d ok / %d errors counted", ok, bad), func() bool {
		c, _ = tl.src.Read()
		if c.RequestsSuccess > ok || c.RequestsError > bad {
			tl.t.Fatalf("counted %d ok / %d errors, more than the %d / %d written", c.RequestsSuccess, c.RequestsError, ok, bad)
		}
		return c.RequestsSuccess == ok && c.RequestsError == bad
	})
	return c
}

// logWriter appends combined-format lines, as a gateway holding the file
// open in append mode does.
type logWriter struct {
	t  *testing.T
	mu sync.Mutex
	f  *os.File
	n  int
}

func openLog(t *testing.T, path string) *logWriter {
	w := &logWriter{t: t}
	w.reopen(path)
	t.Cleanup(func() { w.f.Close() })
	return w
}

func (w *logWriter) reopen(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.f.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
}

func (w *logWriter) write(status int, lines int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for range lines {
		w.n++
		fmt.Fprintf(w.f, "127.0.0.1 - - [03/Dec/2026:13:00:%02d +0000] \"GET /r/%d HTTP/1.1\" %d 12 \"-\" \"t\" 0.%03d\n",
			w.n%60, w.n, status, w.n%1000)
	}
}

func TestLogSourceFollowsRotationBothWaysAndResumes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	w := openLog(t, path)
	w.write(200, 10)
	w.write(500, 2)
	tl := startTailer(t, path, nil)
	tl.waitCounts(10, 2)

	// Rotation by rename: the gateway keeps writing to the renamed file
	// until it reopens; both parts count.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	w.write(200, 5) // to the renamed file
	w.reopen(path)
	w.write(404, 3) // to the new file
	tl.waitCounts(15, 5)

	// copytruncate: copy, lines written between copy and truncation exist
	// only in... the copy is taken first, so write before copying.
	w.write(200, 4)
	copyFile(t, path, path+".2")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	w.write(503, 1)
	tl.waitCounts(19, 6)

	// A line that is not a log line is skipped and counted apart.
	w.mu.Lock()
	fmt.Fprintln(w.f, "this is not an access log line")
	w.mu.Unlock()
	w.write(200, 1)
	c := tl.waitCounts(20, 6)
	if got := tl.src.Stats().Unparseable.Load(); got != 1 {
		t.Fatalf("unparseable = %d, want 1", got)
	}

	// Checkpoint, stop, rotate while stopped, write more, resume: every
	// line counts exactly once.
	c, state := tl.src.Read()
	tl.stop()
	w.write(200, 2) // after the checkpoint, to the file that gets rotated
	if err := os.Rename(path, path+".3"); err != nil {
		t.Fatal(err)
	}
	w.reopen(path)
	w.write(500, 3)
	tl2 := startTailer(t, path, &checkpointed{c: c, state: state})
	tl2.waitCounts(22, 9)

	// Checkpoint, stop, write, copytruncate while stopped: the lines after
	// the checkpoint are read from the copy.
	c, state = tl2.src.Read()
	tl2.stop()
	w.write(404, 4)
	copyFile(t, path, path+".4")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	w.write(200, 1)
	tl3 := startTailer(t, path, &checkpointed{c: c, state: state})
	tl3.waitCounts(23, 13)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func copyFile(t *testing.T, from, to string) {
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLogSourceBoundsLinesAndWaitsForNewlines: a line still being written is
// not counted until its newline arrives, and an over-long line is skipped
// and counted as unparseable without growing memory past the bound.
func TestLogSourceBoundsLinesAndWaitsForNewlines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w := openLog(t, path)
	p, _ := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxCombined})
	src, err := collector.NewLogSource(collector.LogConfig{
		Path: path, Parser: p, Recorder: new(gateway.Recorder), FromStart: true,
		PollInterval: 5 * time.Millisecond, MaxLineBytes: 1024, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailer{t: t, path: path, src: src, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		src.Run(ctx)
	}()
	defer tl.stop()

	line := `127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 200 12 "-" "t" 0.004`
	write := func(s string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, err := fmt.Fprint(w.f, s); err != nil {
			t.Fatal(err)
		}
	}
	// Half a line, read before the rest is written: had it been taken for
	// a line, both halves would be unparseable.
	write(line[:40])
	wait.For(t, 20*time.Second, "the tailer to see the half line's bytes", func() bool {
		_, state := src.Read()
		return strings.Contains(string(state), `"head"`)
	})
	write(line[40:] + "\n")
	tl.waitCounts(1, 0)
	if n := src.Stats().Unparseable.Load(); n != 0 {
		t.Fatalf("a line written in two parts counted %d unparseable lines", n)
	}

	write(strings.Repeat("x", 5000) + "\n") // over MaxLineBytes
	w.write(404, 2)
	tl.waitCounts(1, 2)
	tl.waitUnparseable(1)
}

func (tl *tailer) waitUnparseable(n uint64) {
	tl.t.Helper()
	wait.For(tl.t, 20*time.Second, fmt.Sprintf("%d unparseable lines", n), func() bool {
		return tl.src.Stats().Unparseable.Load() == n
	})
}
