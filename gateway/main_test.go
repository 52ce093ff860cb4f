package gateway

import (
	"io"
	"log"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually polls cond until it holds or the deadline passes. It is how
// tests wait for effects that happen on other goroutines (a handler
// recording its request after the client already has the response).
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// discardLog is a *log.Logger for http.Server.ErrorLog in tests whose
// server logs expected noise (a recovered panic).
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// quietLogger is the slog.Logger tests give to Nodes.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
