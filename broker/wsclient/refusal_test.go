package wsclient

import (
	"strings"
	"testing"
)

// FuzzRefusalMessage: whatever a server answers instead of switching
// protocols, the message taken from it is one bounded line, and reading it
// never panics.
func FuzzRefusalMessage(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\nunknown scope\n",
		"HTTP/1.1 400 Bad Request\r\n\r\nbad query parameter: x\r\nmore",
		"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfull\r\n0\r\n\r\n",
		"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n\r\n",
		"garbage", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, resp []byte) {
		msg := refusalMessage(strings.NewReader(string(resp)))
		if len(msg) > maxRefusalBody || strings.ContainsAny(msg, "\n") || msg != strings.TrimSpace(msg) {
			t.Fatalf("message %q", msg)
		}
	})
}
