package aggregator

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// TestReadySaysWhatIsMissing checks Ready against a server without
// JetStream (not ready: no JetStream server answers, logged once however many
// attempts) and one with it (ready once the streams exist).
func TestReadySaysWhatIsMissing(t *testing.T) {
	_, core := natstest.StartCore(t)
	logs := &countingHandler{}
	a := startWith(t, Config{NATS: core, Logger: slog.New(logs), LeaderDisabled: true}, false)
	if reason, ok := a.Ready(); ok || reason != "history streams: not ensured yet" && reason != "history streams: no JetStream server answers" {
		t.Fatalf("Ready before the first attempt = %q, %v", reason, ok)
	}
	wait.For(t, 10*time.Second, "two failed ensure attempts", func() bool {
		return testutil.ToFloat64(a.metrics.ensureErrors) >= 2
	})
	if reason, ok := a.Ready(); ok || reason != "history streams: no JetStream server answers" {
		t.Fatalf("Ready without JetStream = %q, %v", reason, ok)
	}
	if n := logs.count("streams not ready; retrying"); n != 1 {
		t.Fatalf("logged the condition %d times over several attempts, want once", n)
	}

	_, nc := natstest.StartTest(t)
	b := startWith(t, Config{NATS: nc, Logger: quiet, LeaderDisabled: true}, true)
	if reason, ok := b.Ready(); !ok {
		t.Fatalf("Ready with the streams = %q", reason)
	}
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string]int{}
	}
	h.msgs[r.Message]++
	return nil
}

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}
