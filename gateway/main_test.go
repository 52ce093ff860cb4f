package gateway

import (
	"io"
	"log"
	"log/slog"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// discardLog is a *log.Logger for http.Server.ErrorLog in tests whose
// server logs expected noise (a recovered panic).
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// quietLogger is the slog.Logger tests give to Nodes.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
