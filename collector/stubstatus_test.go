package collector

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestStubStatusActive(t *testing.T) {
	page := "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stub_status" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(page))
	}))
	defer srv.Close()
	got, err := StubStatusActive(srv.Client(), srv.URL+"/stub_status")(context.Background())
	if err != nil || got != 184 {
		t.Fatalf("active = %d, %v; want 6 reading + 179 writing - this request = 184", got, err)
	}
	if _, err := StubStatusActive(srv.Client(), srv.URL+"/elsewhere")(context.Background()); err == nil {
		t.Fatal("a 404 page was read as stub_status")
	}
	for _, bad := range []string{"", "Reading: x Writing: 1 Waiting: 0", "Reading: -1 Writing: 1 Waiting: 0"} {
		if _, err := parseStubStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("parseStubStatus(%q) accepted", bad)
		}
	}
}

// TestUnparseableLinesAreLoggedAtABoundedRate: a gateway writing a format we
// do not read must produce a few log lines, not one per request.
func TestUnparseableLinesAreLoggedAtABoundedRate(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	r := newRateLimitedLog(slog.New(slog.NewTextHandler(&buf, nil)), clock, 10*time.Second)
	for i := range 1000 {
		r.note([]byte("garbage "+strings.Repeat("x", 300)), errors.New("bad"))
		if i == 499 {
			now = now.Add(10 * time.Second)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 1000 bad lines over 10 s, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[1], "suppressed_since_last=499") {
		t.Fatalf("second line does not count the suppressed ones: %s", lines[1])
	}
	if len(lines[0]) > 600 {
		t.Fatalf("a long bad line is logged whole (%d bytes)", len(lines[0]))
	}
}
