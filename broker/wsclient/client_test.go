package wsclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/wsclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// refusing is a server that answers every upgrade request with status and
// body, as an edge refuses before the upgrade.
func refusing(t testing.TB, status int, body string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "3")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/metrics"
}

func TestDialRefusalIsTyped(t *testing.T) {
	tests := []struct {
		status    int
		body      string
		message   string
		permanent bool
	}{
		{400, "bad query parameter: region \"e.u\": letters, digits, - and _ only\n", `bad query parameter: region "e.u": letters, digits, - and _ only`, true},
		{404, "unknown scope region.mars: no snapshot of it was seen live\nsecond line", "unknown scope region.mars: no snapshot of it was seen live", true},
		{401, "", "", true},
		{403, "origin not allowed", "origin not allowed", true},
		{408, "", "", false},
		{429, "too many handshakes", "too many handshakes", false},
		{503, "edge full", "edge full", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			url := refusing(t, tt.status, tt.body)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := wsclient.Dial(ctx, url)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded against a refusing server")
			}
			refused, ok := errors.AsType[*wsclient.HandshakeError](err)
			if !ok {
				t.Fatalf("error %v does not wrap *HandshakeError", err)
			}
			if refused.Status != tt.status || refused.Message != tt.message || refused.Permanent() != tt.permanent {
				t.Errorf("got %+v permanent %v, want status %d message %q permanent %v", refused, refused.Permanent(), tt.status, tt.message, tt.permanent)
			}
			if !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), fmt.Sprint(tt.status, " ", http.StatusText(tt.status))) {
				t.Errorf("error text %q lacks the URL or the status", err)
			}
		})
	}
}

// A refused upgrade tells why, and whether trying again can help.
func ExampleHandshakeError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unknown scope region.mars", http.StatusNotFound)
	}))
	defer srv.Close()
	_, err := wsclient.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/metrics?region=mars")
	if refused, ok := errors.AsType[*wsclient.HandshakeError](err); ok {
		fmt.Println(refused, "- permanent:", refused.Permanent())
	}
	// Output: the server refused the WebSocket upgrade with 404 Not Found: unknown scope region.mars - permanent: true
}
