//go:build linux

package edge

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// Attacker's-side tests of admission: every refusal comes before the
// upgrade, as plain HTTP, and is counted by reason.

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

func newVerifier(t testing.TB, cfg auth.Config) *auth.Verifier {
	t.Helper()
	if cfg.HMACSecret == nil && cfg.PublicKeys == nil && cfg.JWKSURL == "" {
		cfg.HMACSecret = testSecret
	}
	v, err := auth.NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func token(t testing.TB, o auth.MintOptions) string {
	t.Helper()
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	tok, err := auth.MintHMAC(testSecret, o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// upgradeWith is an upgrade request for path with extra header lines.
func upgradeWith(path string, headers ...string) string {
	req := upgradeRequest(path)
	return strings.TrimSuffix(req, "\r\n") + strings.Join(append(headers, ""), "\r\n") + "\r\n"
}

func rejections(te *testEdge, reason string) float64 {
	return testutil.ToFloat64(te.m.rejections[reason])
}

func TestAuthRejectsBeforeUpgrade(t *testing.T) {
	t.Parallel()
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	te := startEdge(t, Config{Auth: newVerifier(t, auth.Config{Audience: "meridian", Issuer: "ops"})})
	te.publishWait(snap(time.Now(), 10))
	good := auth.MintOptions{Audience: "meridian", Issuer: "ops", TTL: time.Hour}
	with := func(f func(*auth.MintOptions)) auth.MintOptions { o := good; f(&o); return o }
	wrongKey, err := auth.MintKey(otherKey, good)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, err := auth.MintHMAC([]byte(strings.Repeat("x", 40)), with(func(o *auth.MintOptions) { o.TTL = time.Hour }))
	if err != nil {
		t.Fatal(err)
	}
	valid := token(t, good)
	cases := []struct {
		name, path string
		headers    []string
		status     int
		reason     string
	}{
		{"no token", wsPath, nil, 401, rejectNoToken},
		{"bad signature", wsPath + "?token=" + valid[:len(valid)-4] + "AAAA", nil, 401, rejectInvalidToken},
		{"other secret", wsPath, []string{"Authorization: Bearer " + otherSecret}, 401, rejectInvalidToken},
		{"signed with a key not configured", wsPath, []string{"Authorization: Bearer " + wrongKey}, 401, rejectInvalidToken},
		{"expired", wsPath + "?token=" + token(t, with(func(o *auth.MintOptions) {
			o.TTL, o.Now = time.Minute, func() time.Time { return time.Now().Add(-time.Hour) }
		})), nil, 401, rejectExpiredToken},
		{"not yet valid", wsPath + "?token=" + token(t, with(func(o *auth.MintOptions) { o.NotBefore = time.Now().Add(time.Hour) })), nil, 401, rejectInvalidToken},
		{"wrong audience", wsPath + "?token=" + token(t, with(func(o *auth.MintOptions) { o.Audience = "grafana" })), nil, 401, rejectInvalidToken},
		{"wrong issuer", wsPath + "?token=" + token(t, with(func(o *auth.MintOptions) { o.Issuer = "mallory" })), nil, 401, rejectInvalidToken},
		{"basic auth", wsPath, []string{"Authorization: Basic YTpi"}, 401, rejectInvalidToken},
		{"two tokens", wsPath + "?token=" + valid, []string{"Authorization: Bearer " + valid}, 401, rejectInvalidToken},
		{"scope outside token", wsPath + "?region=us&token=" + token(t, with(func(o *auth.MintOptions) { o.Scopes = []string{"region.eu"} })), nil, 403, rejectScope},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rejections(te, tc.reason)
			c := rawDial(t, te.Addr().String())
			c.sendRaw([]byte(upgradeWith(tc.path, tc.headers...)))
			resp, body := c.readHTTPResponse(tc.status)
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (%q)", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.status == 403 && !strings.Contains(body, "outside this token's scopes (region.eu)") {
				t.Errorf("403 body %q does not say why", body)
			}
			if after := rejections(te, tc.reason); after != before+1 {
				t.Errorf("rejections_total{reason=%q} went %v → %v", tc.reason, before, after)
			}
			c.expectEOF(5 * time.Second)
		})
	}
	t.Run("valid token in each place", func(t *testing.T) {
		for name, d := range map[string]ws.Dialer{
			"query":    {},
			"header":   {Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + valid}})},
			"protocol": {Protocols: []string{"kairos", auth.ProtocolPrefix + valid}},
		} {
			url := te.url
			if name == "query" {
				url += "?token=" + valid
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			conn, _, hs, err := d.Dial(ctx, url)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if name == "protocol" && hs.Protocol != auth.ProtocolPrefix+valid {
				t.Errorf("protocol: selected %q, want the offered bearer value echoed", hs.Protocol)
			}
			conn.Close()
		}
	})
}

func TestSubscribeOutsideTokenScopes(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Auth: newVerifier(t, auth.Config{})})
	eu := snap(time.Now(), 10)
	eu.Scope = proto.RegionScope("eu")
	us := snap(time.Now(), 990)
	us.Scope = proto.RegionScope("us")
	te.publishWait(eu)
	te.publishWait(us)
	c := dial(t, te.url+"?region=eu&token="+token(t, auth.MintOptions{Scopes: []string{"region.eu"}}))
	c.expectEvent(proto.EventSnapshot, 5*time.Second)
	before := rejections(te, rejectScope)
	for _, msg := range []string{`{"region":"us"}`, `{}`, `{"instance":"gw-us-1"}`} {
		c.sendText(msg)
		ev, raw := c.expectEvent(proto.EventError, 5*time.Second)
		if !strings.Contains(ev.Message, "outside this token's scopes (region.eu); the previous subscription stays") {
			t.Fatalf("%s: error %v", msg, raw)
		}
	}
	if got := rejections(te, rejectScope); got != before+3 {
		t.Errorf("rejections_total{reason=scope} = %v, want %v", got, before+3)
	}
	// The previous subscription stays: eu snapshots keep coming.
	c.sendText(`{"region":"eu","interval_seconds":1}`)
	ev, _ := c.expectEvent(proto.EventSnapshot, 5*time.Second)
	if ev.Values["requests_total"] != 10 {
		t.Fatalf("snapshot %v, want region.eu's", ev.Values)
	}
}

func TestTokenExpiryClosesWith4401(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{Auth: newVerifier(t, auth.Config{})})
	te.publishWait(snap(time.Now(), 10))
	// exp has whole-second precision: 2 s leaves at least 1 s.
	c := dial(t, te.url+"?token="+token(t, auth.MintOptions{TTL: 2 * time.Second}))
	c.expectEvent(proto.EventSnapshot, 5*time.Second)
	code, reason := c.expectClose(10 * time.Second)
	if code != CloseTokenExpired || reason != "token expired" {
		t.Fatalf("close %d %q, want 4401 \"token expired\"", code, reason)
	}
	wait.For(t, 10*time.Second, "closed counted", func() bool {
		return testutil.ToFloat64(te.m.closedByReason[reasonTokenExpired]) == 1
	})
}

func TestOriginPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		allowed []string
		anyOrig bool
		origin  []string
		host    string
		ok      bool
	}{
		{"no origin, no list", nil, false, nil, "edge:5900", true},
		{"same origin, no list", nil, false, []string{"http://edge:5900"}, "edge:5900", true},
		{"cross origin, no list", nil, false, []string{"https://evil.example"}, "edge:5900", false},
		{"null origin, no list", nil, false, []string{"null"}, "edge:5900", false},
		{"exact", []string{"https://app.example.com"}, false, []string{"https://app.example.com"}, "edge", true},
		{"exact, other scheme", []string{"https://app.example.com"}, false, []string{"http://app.example.com"}, "edge", false},
		{"exact, other port", []string{"https://app.example.com"}, false, []string{"https://app.example.com:8443"}, "edge", false},
		{"pattern", []string{"*.example.com"}, false, []string{"http://a.b.example.com:3000"}, "edge", true},
		{"pattern needs a subdomain", []string{"*.example.com"}, false, []string{"https://example.com"}, "edge", false},
		{"pattern suffix trick", []string{"*.example.com"}, false, []string{"https://evilexample.com"}, "edge", false},
		{"pattern suffix trick 2", []string{"*.example.com"}, false, []string{"https://example.com.evil.io"}, "edge", false},
		{"scheme pattern", []string{"https://*.example.com"}, false, []string{"http://a.example.com"}, "edge", false},
		{"list excludes same origin", []string{"https://app.example.com"}, false, []string{"http://edge"}, "edge", false},
		{"two origins", nil, true, []string{"https://a", "https://b"}, "edge", false},
		{"any", nil, true, []string{"null"}, "edge", true},
	} {
		p, err := newOriginPolicy(tc.allowed, tc.anyOrig)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := p.allows(tc.origin, tc.host); got != tc.ok {
			t.Errorf("%s: allows(%q, %q) = %v, want %v", tc.name, tc.origin, tc.host, got, tc.ok)
		}
	}
	for _, bad := range []string{"example.com", "https://*", "https://a.*.com", "ftp://x/path", "*.example.com:80"} {
		if _, err := newOriginPolicy([]string{bad}, false); err == nil {
			t.Errorf("allowed origin %q accepted", bad)
		}
	}
}

func TestBadOriginRefusedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{AllowedOrigins: []string{"https://dash.example.com"}})
	te.publishWait(snap(time.Now(), 10))
	c := rawDial(t, te.Addr().String())
	c.sendRaw([]byte(upgradeWith(wsPath, "Origin: https://evil.example")))
	c.readHTTPResponse(http.StatusForbidden)
	if rejections(te, rejectOrigin) != 1 {
		t.Error("origin rejection not counted")
	}
	ok := rawDial(t, te.Addr().String())
	ok.sendRaw([]byte(upgradeWith(wsPath, "Origin: https://dash.example.com")))
	ok.readHTTPResponse(http.StatusSwitchingProtocols)
}

// dialFrom opens a TCP connection from source address src (127.0.0.x).
func dialFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { conn.Close() })
	return rawClient(t, conn)
}

func httpGetFrom(t testing.TB, src, addr, path string, headers ...string) (int, string) {
	t.Helper()
	c := dialFrom(t, src, addr)
	c.sendRaw([]byte("GET " + path + " HTTP/1.1\r\nHost: edge\r\n" + strings.Join(append(headers, ""), "\r\n") + "Connection: close\r\n\r\n"))
	resp, body := readResponse(c)
	return resp.StatusCode, body
}

func TestPerAddressLimit(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{MaxConnsPerAddr: 3})
	te.publishWait(snap(time.Now(), 10))
	addr := te.Addr().String()
	var held []*client
	for range 3 {
		c := dialFrom(t, "127.0.0.1", addr)
		c.sendRaw([]byte(upgradeRequest(wsPath + "?")))
		c.readHTTPResponse(http.StatusSwitchingProtocols)
		held = append(held, c)
	}
	// The fourth socket from the same address: 429 before any upgrade.
	c := dialFrom(t, "127.0.0.1", addr)
	c.sendRaw([]byte(upgradeRequest(wsPath)))
	resp, _ := c.readHTTPResponse(http.StatusTooManyRequests)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if rejections(te, rejectAddrConns) < 1 {
		t.Error("addr_conns rejection not counted")
	}
	// /healthz answers, from that address and from another.
	for _, src := range []string{"127.0.0.1", "127.0.0.3"} {
		if code, body := httpGetFrom(t, src, addr, "/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz from %s: %d %q", src, code, body)
		}
	}
	// A client from 127.0.0.2 is served.
	other := dialFrom(t, "127.0.0.2", addr)
	other.sendRaw([]byte(upgradeRequest(wsPath)))
	other.readHTTPResponse(http.StatusSwitchingProtocols)
	// Existing clients are unaffected: they still get snapshots.
	te.publishWait(snap(time.Now().Add(time.Second), 20))
	for _, h := range held {
		h.sendText(`{"interval_seconds":1}`)
		h.expectEvent(proto.EventSnapshot, 5*time.Second)
	}
	// Closing one frees a place.
	held[0].conn.Close()
	wait.For(t, 10*time.Second, "place freed", func() bool {
		c := dialFrom(t, "127.0.0.1", addr)
		c.sendRaw([]byte(upgradeRequest(wsPath)))
		return readStatus(c) == http.StatusSwitchingProtocols
	})
}

// readResponse reads one HTTP response: status and body (0 on error).
func readResponse(c *client) (*http.Response, string) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r.(*bufio.Reader), nil)
	if err != nil {
		return &http.Response{Header: http.Header{}}, err.Error()
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func readStatus(c *client) int {
	resp, _ := readResponse(c)
	return resp.StatusCode
}

func rawClient(t testing.TB, conn net.Conn) *client {
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}
