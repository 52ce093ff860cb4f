package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRateLimitedLog(t *testing.T) {
	var buf bytes.Buffer
	l := &rateLimitedLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 100 {
		l.warn("upstream request failed", "status", 502)
	}
	if lines := strings.Count(buf.String(), "\n"); lines != 1 {
		t.Fatalf("%d lines logged for a burst, want 1:\n%s", lines, buf.String())
	}
	if got := l.suppressed.Load(); got != 99 {
		t.Fatalf("%d lines suppressed, want 99", got)
	}
	l.next.Store(0) // a second has passed
	buf.Reset()
	l.warn("upstream request failed", "status", 504)
	if !strings.Contains(buf.String(), "suppressed_since_last=99") || !strings.Contains(buf.String(), "status=504") {
		t.Fatalf("next line %q does not report the suppressed ones", buf.String())
	}
}
