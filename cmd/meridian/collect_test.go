package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCollectUsageErrors: every bad combination of collect flags is a usage
// error (exit 2) naming what to fix, before anything connects.
func TestCollectUsageErrors(t *testing.T) {
	base := []string{"meridian", "collect", "--region", "eu", "--instance", "nginx-1", "--nats-url", "nats://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "exactly one source"},
		{[]string{"--access-log", "/x", "--scrape-url", "http://x"}, "exactly one source"},
		{[]string{"--access-log", "/x", "--access-log-format", "w3c"}, "--access-log-format"},
		{[]string{"--access-log", "/x", "--access-log-format", "regex", "--access-log-regex", "(?P<status>x)"}, "duration"},
		{[]string{"--access-log", "/x", "--poll-interval", "-1s"}, "negative"},
		{[]string{"--syslog-listen", "tcp://127.0.0.1:1"}, "--syslog-listen"},
		{[]string{"--scrape-url", "http://x"}, "--profile or --mapping"},
		{[]string{"--scrape-url", "http://x", "--profile", "kong"}, "--profile"},
		{[]string{"--scrape-url", "http://x", "--profile", "caddy", "--mapping", "/m.json"}, "alternatives"},
		{[]string{"--scrape-url", "http://x", "--mapping", "/does/not/exist.json"}, "--mapping"},
		{[]string{"--scrape-url", "http://x", "--profile", "haproxy", "--scrape-match", "proxy"}, "--scrape-match"},
		{[]string{"--access-log", "/x", "--region", "e.u"}, "--region"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(append([]string(nil), base...), tc.args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}
