//go:build linux

package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunEndToEnd runs the whole harness — three modes, each with a server
// and a client process — with 200 subscribers, and checks the report and
// that no child process outlives Run.
func TestRunEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six processes and takes ~20 s")
	}
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{
		Subscribers: n, MemoryPoints: []int{n / 2}, Duration: 3 * time.Second, Settle: time.Second, IdleWindow: 500 * time.Millisecond,
		Sources: 4, Child: testChild,
	})
	assertNoChildren(t)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range requiredJSONKeys {
		if _, ok := got[k].(float64); !ok {
			t.Errorf("JSON key %q is %v (%T), want a number", k, got[k], got[k])
		}
	}
	if os.Geteuid() == 0 && (rep.Network != NetworkNamespace || got["network"] != string(NetworkNamespace)) {
		t.Errorf("network %q (JSON %v, note %q), want a namespace when running as root", rep.Network, got["network"], rep.NetworkNote)
	}
	if got["subscribers"] != float64(n) {
		t.Errorf("subscribers = %v, want %d", got["subscribers"], n)
	}
	for _, m := range []*ModeResult{rep.Edge, rep.Baseline, rep.Raw} {
		if m == nil {
			t.Fatalf("a mode is missing from the report: %+v", rep)
		}
		due, made := float64(m.DeliveriesDue), float64(m.DeliveriesMade)
		// Two seconds of ticks at 1 s for each subscriber.
		if due < 1.5*n || made < 0.95*due || made > due {
			t.Errorf("%s: made %v of %v due, want ≥ 95%% of about %d", m.Mode, made, due, 2*n)
		}
		if m.Connected != n || m.CPUMicrosPerDelivery <= 0 || m.Deliveries == 0 {
			t.Errorf("%s: connected %d, %v µs per delivery over %d deliveries", m.Mode, m.Connected, m.CPUMicrosPerDelivery, m.Deliveries)
		}
		// The sweep: 100 then 200 in the same server, after a warm-up of
		// 50 (half the first point) that left again.
		if m.WarmupSubscribers != n/4 || len(m.Memory) != 2 || m.Memory[0].Subscribers != n/2 || m.Memory[1].Subscribers != n {
			t.Errorf("%s: warm-up %d, memory points %+v; want a warm-up of %d and points at %d and %d", m.Mode, m.WarmupSubscribers, m.Memory, n/4, n/2, n)
		}
		if m.FixedBytes <= 0 || m.ColdThreads < 1 || m.WarmThreads < 1 {
			t.Errorf("%s: one-off cost %d bytes, threads %d cold, %d warm", m.Mode, m.FixedBytes, m.ColdThreads, m.WarmThreads)
		}
		if m.TickToWireP99Ms < m.TickToWireP50Ms || m.TickToWireMaxMs < m.TickToWireP99Ms || m.TickToWireP99Ms > 1000 {
			t.Errorf("%s: tick-to-wire p50 %v p99 %v max %v ms", m.Mode, m.TickToWireP50Ms, m.TickToWireP99Ms, m.TickToWireMaxMs)
		}
	}
	// The naive baseline spends two goroutines per subscriber; the edge and
	// the raw loop none.
	if g := rep.Baseline.GoroutinesPerSubscriber; g < 1.9 || g > 2.1 {
		t.Errorf("baseline goroutines per subscriber %v, want 2", g)
	}
	if g := rep.Edge.GoroutinesPerSubscriber; g > 0.1 {
		t.Errorf("edge goroutines per subscriber %v, want 0", g)
	}
	if rep.Edge.ServerTickLagP99Ms == nil {
		t.Errorf("the edge's own tick lag is missing")
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CPU per delivery", "tick-to-wire p50 / p99", "targets:", "RSS over warm", "one-off cost of the first connections"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

// TestRunSlowSubscribers runs the edge with a tenth of the subscribers
// stalling for longer than a handful of Snapshots take to fill both
// socket buffers: the edge must conflate for them, keep them open, and
// still serve every other subscriber every tick.
func TestRunSlowSubscribers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes and takes ~25 s")

	}
	const n, slow = 40, 4
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, Config{
		Subscribers: n, Slow: slow, Duration: 17 * time.Second,
		Settle: time.Second, IdleWindow: 500 * time.Millisecond, Sources: 2,
		Modes: []Mode{ModeEdge}, Child: testChild,
	})
	assertNoChildren(t)
	if err != nil {
		t.Fatal(err)
	}
	e := rep.Edge
	if e.Conflations < slow || e.SlowClosed != 0 || e.Dropped != 0 || e.SlowSnapshots < slow {
		t.Errorf("slow subscribers: %d conflations, %d closed, %d dropped, %d Snapshots read; want ≥ %d conflations, none closed or dropped, some read",
			e.Conflations, e.SlowClosed, e.Dropped, e.SlowSnapshots, slow)
	}
	// The others: every tick (about 16 each), none twice.
	if e.DeliveriesMade != e.DeliveriesDue || e.DeliveriesDue < 14*(n-slow) || e.Duplicates != 0 || e.ClientProblem != "" {
		t.Errorf("other subscribers: %d of %d due, %d duplicates, problem %q", e.DeliveriesMade, e.DeliveriesDue, e.Duplicates, e.ClientProblem)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "slow (4, stalling 12s): Snapshots read") {
		t.Errorf("table lacks the slow subscribers:\n%s", table.String())
	}
}

// TestRunStopsChildrenWhenCancelled ends the context in the middle of a
// mode: Run returns the context's error and leaves no process behind.
func TestRunStopsChildrenWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 8)
	child := func() *exec.Cmd {
		started <- struct{}{}
		return testChild()
	}
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Config{Subscribers: 50, Duration: time.Minute, Child: child, Modes: []Mode{ModeEdge}})
		done <- err
	}()
	// Both children started: the client connects, the window is a minute.
	for range 2 {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatal("children not started")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assertNoChildren(t)
}

func TestConfigValidation(t *testing.T) {
	limit, err := MaxSubscribers()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no child", Config{}, "Child is required"},
		{"too many subscribers", Config{Subscribers: max(limit+1, 1<<29), Child: testChild}, "subscribers"}, // above fs.nr_open: not even root may raise the limit that far
		{"negative subscribers", Config{Subscribers: -1, Child: testChild}, "subscribers"},
		{"short duration", Config{Duration: time.Second, Child: testChild}, "duration"},
		{"sources", Config{Sources: 255, Child: testChild}, "sources"},
		{"intervals", Config{Intervals: "5s", Child: testChild}, "intervals"},
		{"mode", Config{Modes: []Mode{"fast"}, Child: testChild}, "unknown mode"},
		{"mode twice", Config{Modes: []Mode{ModeEdge, ModeEdge}, Child: testChild}, "twice"},
		{"client poll", Config{ClientPoll: 2 * time.Second, Child: testChild}, "client poll"},
		{"network", Config{Network: "bridge", Child: testChild}, "unknown network"},
		{"slow", Config{Subscribers: 10, Slow: 10, Child: testChild}, "slow subscribers 10"},
		{"rounds", Config{Rounds: 10, Child: testChild}, "rounds 10"},
		{"points not ascending", Config{Subscribers: 100, MemoryPoints: []int{50, 50}, Child: testChild}, "ascending"},
		{"point above subscribers", Config{Subscribers: 100, MemoryPoints: []int{200}, Child: testChild}, "ascending"},
		{"point below 1", Config{Subscribers: 100, MemoryPoints: []int{0}, Child: testChild}, "at least 1"},
		{"warm-up as large as the first point", Config{Subscribers: 100, MemoryPoints: []int{10}, Warmup: 10, Child: testChild}, "warm-up 10"},
		{"warm-up below none", Config{Warmup: -2, Child: testChild}, "warm-up -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// assertNoChildren fails if any process has this one as its parent.
func assertNoChildren(t *testing.T) {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		rest := b[bytes.LastIndexByte(b, ')')+1:]
		fields := strings.Fields(string(rest))
		if len(fields) > 1 && fields[1] == self {
			t.Errorf("child process %s is still there: %s", filepath.Base(filepath.Dir(path)), b)
		}
	}
}
