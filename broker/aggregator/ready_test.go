package aggregator

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/logbuf"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// TestReadySaysWhatIsMissing checks Ready against a server without
// JetStream (not ready: no JetStream server answers, logged once however many
// attempts) and one with it (ready once the streams exist).
func TestReadySaysWhatIsMissing(t *testing.T) {
	_, core := natstest.StartCore(t)
	var logs logbuf.Buffer
	a := startWith(t, Config{NATS: core, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), LeaderDisabled: true}, false)
	if reason, ok := a.Ready(); ok || reason != "history streams: not ensured yet" && reason != "history streams: no JetStream server answers" {
		t.Fatalf("Ready before the first attempt = %q, %v", reason, ok)
	}
	wait.For(t, 10*time.Second, "two failed ensure attempts", func() bool {
		return testutil.ToFloat64(a.metrics.ensureErrors) >= 2
	})
	if reason, ok := a.Ready(); ok || reason != "history streams: no JetStream server answers" {
		t.Fatalf("Ready without JetStream = %q, %v", reason, ok)
	}
	if n := logs.Count(`"streams not ready; retrying"`); n != 1 {
		t.Fatalf("logged the condition %d times over several attempts, want once", n)
	}

	_, nc := natstest.StartTest(t)
	b := startWith(t, Config{NATS: nc, Logger: quiet, LeaderDisabled: true}, true)
	if reason, ok := b.Ready(); !ok {
		t.Fatalf("Ready with the streams = %q", reason)
	}
}
