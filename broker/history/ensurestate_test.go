package history

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// TestEnsureReadsBeforeItWrites checks that ensure creates a missing
// stream, leaves a stream as wanted untouched (no update proposal: its
// configuration is not rewritten), and updates one that differs.
func TestEnsureReadsBeforeItWrites(t *testing.T) {
	ctx, js := startStream(t)
	// Changed behind ensure's back in a field ensure does not own: an
	// update would reset it, a read leaves it.
	s, err := js.Stream(ctx, proto.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs = 12345
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(ctx, t, js).MaxMsgs; got != 12345 {
		t.Fatalf("ensure of a stream as wanted rewrote it: MaxMsgs %d", got)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := streamConfig(ctx, t, js).MaxAge; got != time.Hour {
		t.Fatalf("ensure did not update MaxAge: %v", got)
	}
}

func streamConfig(ctx context.Context, t *testing.T, js jetstream.JetStream) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(ctx, proto.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().Config
}

func TestConditionAndTransient(t *testing.T) {
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: jsClusterNotAvailable, Description: "JetStream system temporarily unavailable"}
	for _, tc := range []struct {
		err       error
		condition string
		transient bool
	}{
		{fmt.Errorf("ensure: %w", unavailable), "JetStream has no meta leader yet", true},
		{fmt.Errorf("ensure: %w", ErrNoLeader), "stream has no leader yet", true},
		{fmt.Errorf("ensure: %w", context.DeadlineExceeded), "JetStream did not answer", true},
		{fmt.Errorf("ensure: %w", nats.ErrNoResponders), "no JetStream server answers", true},
		{fmt.Errorf("ensure: %w", nats.ErrConnectionClosed), "not connected to NATS", true},
		{fmt.Errorf("ensure: %w", jetstream.ErrJetStreamNotEnabled), "JetStream not enabled", false},
		{fmt.Errorf("ensure: %w", &jetstream.APIError{Code: 400, ErrorCode: 10065, Description: "subjects overlap"}), "JetStream refused the stream (10065)", false},
		{errors.New("something else"), "stream unusable", true},
	} {
		if got := Condition(tc.err); got != tc.condition {
			t.Errorf("Condition(%v) = %q, want %q", tc.err, got, tc.condition)
		}
		if got := Transient(tc.err); got != tc.transient {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.transient)
		}
	}
	if Condition(nil) != "" || Transient(nil) {
		t.Error("nil is no condition")
	}
}
