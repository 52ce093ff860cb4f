//go:build linux

package edge

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/proto"
)

func TestParseUpgradeQuery(t *testing.T) {
	since := time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC)
	tests := []struct {
		query   string
		scope   proto.Scope
		since   time.Time
		wantErr string
	}{
		{query: "", scope: proto.ClusterScope()},
		{query: "region=eu", scope: regionEU},
		{query: "instance=gw-eu-1", scope: instEU1},
		{query: "region=eu&since=2024-11-07T10:30:00Z", scope: regionEU, since: since},
		{query: "since=2024-11-07T11:30:00%2B01:00", since: since},
		{query: "x=1&y", scope: proto.ClusterScope()},
		{query: "region=e%20u", wantErr: `region "e u" has character ' '`},
		{query: "region=eu&instance=gw-1", wantErr: "name a region or an instance, not both"},
		{query: "region=", wantErr: "region is empty"},
		{query: "instance=a&instance=b", wantErr: "instance is given 2 times; give it once"},
		{query: "since=yesterday", wantErr: `since must be an RFC 3339 time such as 2024-11-07T10:30:00Z, got "yesterday"`},
		{query: "region=%zz", wantErr: "the query string is not URL-encoded"},
		{query: "region=" + strings.Repeat("r", 65), wantErr: "longer than 64 characters"},
	}
	for _, tt := range tests {
		sub, err := parseUpgradeQuery(tt.query)
		if tt.wantErr != "" {
			if err == nil || !errors.Is(err, errBadQuery) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tt.query, err, tt.wantErr)
			}
			continue
		}
		if err != nil || sub.Scope != tt.scope || !sub.Since.Equal(tt.since) {
			t.Errorf("%q = scope %v since %v err %v, want %v %v", tt.query, sub.Scope, sub.Since, err, tt.scope, tt.since)
		}
		if d := proto.DefaultSubscription(); sub.Metrics != d.Metrics || sub.IntervalSeconds != d.IntervalSeconds || sub.IncludeHistory {
			t.Errorf("%q: %+v, want the default subscription otherwise", tt.query, sub)
		}
	}
}

func TestRequestQuery(t *testing.T) {
	for line, want := range map[string]string{
		"GET /ws/metrics HTTP/1.1\r\n":                  "",
		"GET /ws/metrics?region=eu HTTP/1.1\r\n":        "region=eu",
		"GET /ws/metrics?region=eu&since=x HTTP/1.1\n":  "region=eu&since=x",
		"GET /ws/metrics?a=b#frag HTTP/1.1\r\n":         "a=b",
		"GET /ws/metrics?":                              "",
		"GET /ws/metrics?instance=gw%201 HTTP/1.0\r\n":  "instance=gw%201",
		"GET /ws/metrics?q=1?2 HTTP/1.1\r\n":            "q=1?2",
		"GET /ws/metrics?region=eu  HTTP/1.1\r\n":       "region=eu",
		"GET /ws/metrics?region=eu HTTP/1.1 extra\r\n":  "region=eu",
		"GET /ws/metrics?region=eu\r\n":                 "region=eu",
		"GET /ws/metrics?since=2024-11-07T10:30:00Z \n": "since=2024-11-07T10:30:00Z",
	} {
		if got := requestQuery([]byte(line)); got != want {
			t.Errorf("requestQuery(%q) = %q, want %q", line, got, want)
		}
	}
}

// FuzzUpgradeQuery: the query parser never panics, and what it accepts is
// a valid subscription whose scope survives the wire.
func FuzzUpgradeQuery(f *testing.F) {
	for _, s := range []string{"", "region=eu", "instance=gw-1&since=2024-11-07T10:30:00Z", "region=%zz", "region=a&region=b", "since=x&region="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		sub, err := parseUpgradeQuery(q)
		if err != nil {
			if !errors.Is(err, errBadQuery) {
				t.Fatalf("error %v does not wrap errBadQuery", err)
			}
			return
		}
		back, err := proto.ParseScope(sub.Scope.String())
		if err != nil || back != sub.Scope {
			t.Fatalf("scope %v does not round-trip: %v %v", sub.Scope, back, err)
		}
		if got := requestQuery([]byte("GET /ws/metrics?" + q + " HTTP/1.1\r\n")); !strings.Contains(q, " ") && got != strings.SplitN(q, "#", 2)[0] {
			t.Fatalf("requestQuery lost the query: %q from %q", got, q)
		}
	})
}

// Bad query parameters are refused before the upgrade, with a body saying
// why; an unknown scope is a 404 listing the known ones. The same holds for
// an upgrade on a reused keep-alive connection (the HTTP server's path).
func TestUpgradeQueryRejected(t *testing.T) {
	t.Parallel()
	_, start := startJS(t)
	te := start(Config{})
	te.publishScopes(time.Now())
	tests := []struct {
		query  string
		status int
		body   string
	}{
		{"?region=e%20u", 400, `bad query parameter: region "e u" has character ' '; use letters, digits, '-' and '_'`},
		{"?region=eu&instance=gw-eu-1", 400, "bad query parameter: name a region or an instance, not both"},
		{"?since=yesterday", 400, "bad query parameter: since must be an RFC 3339 time"},
		{"?region=", 400, "bad query parameter: region is empty"},
		{"?region=mars", 404, "unknown scope region.mars: no snapshot of it was seen live or is kept in history; known scopes: cluster, region.eu, instance.gw-eu-1"},
	}
	for _, tt := range tests {
		for _, reused := range []bool{false, true} {
			c := rawDial(t, te.Addr().String())
			if reused {
				c.sendRaw([]byte("GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n"))
				c.readHTTPResponse(http.StatusOK)
			}
			c.sendRaw([]byte(upgradeRequest(wsPath + tt.query)))
			resp, body := c.readHTTPResponse(tt.status)
			if !strings.HasPrefix(body, tt.body) {
				t.Errorf("%s (reused %v): body %q, want it to start with %q", tt.query, reused, body, tt.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("%s: content type %q", tt.query, ct)
			}
		}
	}
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeBadQuery]); got != 8 {
		t.Errorf("errors{bad_query} = %v, want 8", got)
	}
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeUnknownScope]); got != 2 {
		t.Errorf("errors{unknown_scope} = %v, want 2", got)
	}
	if n := te.Edge.reg.len(); n != 0 {
		t.Errorf("%d connections registered after refused upgrades", n)
	}
	// Nothing refused stays pinned.
	if _, served := te.scopes.census(); served != [3]int{} {
		t.Errorf("scopes still pinned: %v", served)
	}
}
