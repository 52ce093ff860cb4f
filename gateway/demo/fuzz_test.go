package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzHandlerQuery feeds arbitrary status and delay parameters: the handler
// must never panic, must answer 400 or the requested status, and must not
// wait longer than it was asked to (the fuzzer only reaches fast delays
// because larger ones are rejected or capped).
func FuzzHandlerQuery(f *testing.F) {
	for _, seed := range [][2]string{
		{"200", "0s"}, {"503", "1ms"}, {"103", "0"}, {"101", ""}, {"abc", "1h"},
		{"-1", "-1s"}, {"99999999999999999999", "1e3s"}, {"204", "0.5ms"},
	} {
		f.Add(seed[0], seed[1])
	}
	h := Handler(Config{Latency: Constant(0)})
	f.Fuzz(func(t *testing.T, status, delay string) {
		q := url.Values{"status": {status}}
		if delay != "" {
			q.Set("delay", delay)
		}
		// Keep fuzzing fast: a valid delay above 2ms is only checked for
		// acceptance, not waited for.
		if d, err := parseDelay(delay); delay != "" && err == nil && d > 2e6 {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/?"+q.Encode(), nil))
		want, err := parseStatus(status)
		if delay != "" {
			if _, derr := parseDelay(delay); derr != nil {
				err = derr
			}
		}
		if err != nil {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status=%q delay=%q: %d, want 400", status, delay, rec.Code)
			}
			return
		}
		// ResponseRecorder keeps the first status it sees, so for a 1xx it
		// holds the informational one; TestHandlerInformational checks the
		// real sequence over HTTP.
		if rec.Code != want {
			t.Fatalf("status=%q delay=%q: %d, want %d", status, delay, rec.Code, want)
		}
		if bodyAllowed(want) {
			var r Response
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || r.Status != want {
				t.Fatalf("body %q (%v), want status %d", rec.Body, err, want)
			}
		}
	})
}
