package leader

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// logBuffer collects log lines for counting, safely for the logger's
// goroutines and the test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

// TestQuorumLossLoggedOnce: with JetStream quorum gone (two of three nodes
// down) the surviving node may still answer lease reads while every write
// fails. The elector says once that the lease store is unavailable, not
// once per poll, and once that it recovered when quorum returns.
func TestQuorumLossLoggedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-node JetStream cluster")
	}
	c := natstest.StartCluster(t, 3)
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	nc, err := nats.Connect(c.URL(0), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{JS: js, ID: "a", TTL: testTTL, Replicas: 3, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	wait.For(t, 60*time.Second, "leading on the three-node cluster", e.Leading)

	c.Stop(1)
	c.Stop(2)
	wait.For(t, 30*time.Second, "the unavailable line", func() bool { return logs.count("lease store unavailable") > 0 })
	wait.For(t, 30*time.Second, "stepping down", func() bool { return !e.Leading() })
	// Many polls (every 100 ms) and lease expiries later: still one line
	// each way, none saying it recovered.
	polls := time.Now().Add(5 * time.Second)
	wait.For(t, 10*time.Second, "five seconds of polls without quorum", func() bool { return time.Now().After(polls) })
	if n, r := logs.count("lease store unavailable"), logs.count("lease store recovered"); n != 1 || r != 0 {
		t.Fatalf("without quorum: %d unavailable and %d recovered lines, want 1 and 0:\n%s", n, r, logs.b.String())
	}

	for _, i := range []int{1, 2} {
		if err := c.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 90*time.Second, "leading again with quorum back", e.Leading)
	wait.For(t, 30*time.Second, "the recovered line", func() bool { return logs.count("lease store recovered") > 0 })
	if n, r := logs.count("lease store unavailable"), logs.count("lease store recovered"); n != 1 || r != 1 {
		t.Fatalf("after quorum returned: %d unavailable and %d recovered lines, want 1 and 1", n, r)
	}
}
