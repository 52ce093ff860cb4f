//go:build linux

package edge

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestEdgeFull(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{MaxConns: 2})
	te.publishWait(snap(time.Now(), 10))
	addr := te.Addr().String()
	for _, src := range []string{"127.0.0.1", "127.0.0.2"} {
		c := dialFrom(t, src, addr)
		c.sendRaw([]byte(upgradeRequest(wsPath)))
		c.readHTTPResponse(http.StatusSwitchingProtocols)
	}
	c := dialFrom(t, "127.0.0.3", addr)
	c.sendRaw([]byte(upgradeRequest(wsPath)))
	resp, body := c.readHTTPResponse(http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "edge full") {
		t.Errorf("503 %q without Retry-After or reason", body)
	}
	if code, _ := httpGetFrom(t, "127.0.0.4", addr, "/healthz"); code != 200 {
		t.Errorf("/healthz on a full edge: %d", code)
	}
	if rejections(te, rejectEdgeFull) < 1 {
		t.Error("edge_full not counted")
	}
}

func TestUpgradeRateLimit(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{UpgradesPerSecond: 0.01, UpgradeBurst: 2})
	te.publishWait(snap(time.Now(), 10))
	addr := te.Addr().String()
	for range 2 {
		c := dialFrom(t, "127.0.0.5", addr)
		c.sendRaw([]byte(upgradeRequest(wsPath)))
		c.readHTTPResponse(http.StatusSwitchingProtocols)
	}
	c := dialFrom(t, "127.0.0.5", addr)
	c.sendRaw([]byte(upgradeRequest(wsPath)))
	resp, _ := c.readHTTPResponse(http.StatusTooManyRequests)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	other := dialFrom(t, "127.0.0.6", addr)
	other.sendRaw([]byte(upgradeRequest(wsPath)))
	other.readHTTPResponse(http.StatusSwitchingProtocols)
	if rejections(te, rejectUpgradeRate) != 1 {
		t.Error("upgrade_rate not counted")
	}
}

// TestSlowlorisHandshakes: sockets that never finish their request take
// at most their address's share; the edge answers 503 once every handshake
// slot is taken, and frees them after HandshakeTimeout.
func TestSlowlorisHandshakes(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{MaxHandshakes: 3, MaxHandshakesPerAddr: 2, HandshakeTimeout: 2 * time.Second})
	addr := te.Addr().String()
	// One address gets 2 slots; its third slow socket is refused (429).
	for range 2 {
		c := dialFrom(t, "127.0.0.7", addr)
		c.sendRaw([]byte("GET /ws/metrics HTTP/1.1\r\n")) // and nothing more
	}
	wait.For(t, 10*time.Second, "handshake slots taken", func() bool { return len(te.hsSem) == 2 })
	third := dialFrom(t, "127.0.0.7", addr)
	third.sendRaw([]byte(upgradeRequest(wsPath)))
	third.readHTTPResponse(http.StatusTooManyRequests)
	wait.For(t, 10*time.Second, "refusal done", func() bool { return len(te.hsSem) == 2 })
	for range 1 {
		c := dialFrom(t, "127.0.0.17", addr)
		c.sendRaw([]byte("GET /ws/metrics HTTP/1.1\r\n")) // and nothing more
	}
	wait.For(t, 10*time.Second, "handshake slots taken", func() bool { return len(te.hsSem) == 3 })
	c := dialFrom(t, "127.0.0.8", addr)
	resp, body := readResponse(c)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("with every handshake slot taken: %d %q", resp.StatusCode, body)
	}
	if rejections(te, rejectHandshakes) < 1 {
		t.Error("handshakes rejection not counted")
	}
	// The slow sockets time out and the slots come back.
	wait.For(t, 10*time.Second, "handshake slots freed", func() bool { return len(te.hsSem) == 0 })
	if code, _ := httpGetFrom(t, "127.0.0.8", addr, "/healthz"); code != 200 {
		t.Errorf("/healthz after the slowloris: %d", code)
	}
}

func TestLookupRateLimit(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{LookupsPerSecond: 0.01, LookupBurst: 1})
	te.publishWait(snap(time.Now(), 10))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 5*time.Second)
	c.sendText(`{"region":"nowhere1"}`)
	ev, _ := c.expectEvent(proto.EventError, 10*time.Second)
	if !strings.Contains(ev.Message, "unknown scope region.nowhere1") {
		t.Fatalf("first lookup: %q", ev.Message)
	}
	c.sendText(`{"region":"nowhere2"}`)
	ev, _ = c.expectEvent(proto.EventError, 10*time.Second)
	if !strings.Contains(ev.Message, "scope lookups rate limited") {
		t.Fatalf("second lookup: %q", ev.Message)
	}
	if rejections(te, rejectLookupRate) != 1 {
		t.Error("lookup_rate not counted")
	}
	// On the upgrade URL: 429.
	r := rawDial(t, te.Addr().String())
	r.sendRaw([]byte(upgradeRequest(wsPath + "?region=nowhere3")))
	r.readHTTPResponse(http.StatusTooManyRequests)
}

// TestRESTGuard: Config.HTTP requests need a token, are rate limited per
// address, and see the grant.
func TestRESTGuard(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := auth.GrantFrom(r.Context())
		fmt.Fprintf(w, "eu=%v us=%v", g.Allows(proto.RegionScope("eu")), g.Allows(proto.RegionScope("us")))
	})
	te := startEdge(t, Config{HTTP: h, Auth: newVerifier(t, auth.Config{}), RESTRequestsPerSecond: 0.01, RESTBurst: 3,
		AllowedOrigins: []string{"https://dash.example.com"}})
	addr := te.Addr().String()
	tok := token(t, auth.MintOptions{Scopes: []string{"region.eu"}})
	if code, _ := httpGetFrom(t, "127.0.0.9", addr, "/api/x"); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code, _ := httpGetFrom(t, "127.0.0.9", addr, "/api/x", "Origin: https://evil.example", "Authorization: Bearer "+tok); code != http.StatusForbidden {
		t.Errorf("bad origin: %d", code)
	}
	if code, body := httpGetFrom(t, "127.0.0.9", addr, "/api/x?token="+tok); code != 200 || body != "eu=true us=false" {
		t.Errorf("with token: %d %q", code, body)
	}
	c := dialFrom(t, "127.0.0.9", addr)
	c.sendRaw([]byte("GET /api/x HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer " + tok + "\r\nConnection: close\r\n\r\n"))
	resp, _ := readResponse(c)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fourth request: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := httpGetFrom(t, "127.0.0.9", addr, "/healthz"); code != 200 {
		t.Errorf("/healthz is rate limited: %d", code)
	}
}

func FuzzParseHead(f *testing.F) {
	f.Add([]byte(upgradeWith(wsPath, "Origin: https://a", "Authorization: Bearer x", "Sec-WebSocket-Protocol: bearer.x, kairos")))
	f.Add([]byte("GET / HTTP/1.1\nHost: a\nHost: b\n\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		h, err := parseHead(head)
		if err != nil {
			return
		}
		for _, v := range append(append(h.origins, h.authorization...), h.protocols...) {
			if strings.ContainsAny(v, "\r\n") {
				t.Fatalf("header value %q spans lines", v)
			}
		}
	})
}

func TestAddrOfGroupsIPv6By64(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2:aaaa::1]:5000", "[2001:db8:1:2:bbbb::9]:6000"},
		{"[::ffff:10.0.0.1]:1", "10.0.0.1:2"},
	} {
		a, _ := net.ResolveTCPAddr("tcp", tc.a)
		b, _ := net.ResolveTCPAddr("tcp", tc.b)
		if addrOf(a) != addrOf(b) {
			t.Errorf("%s and %s count as different clients: %v, %v", tc.a, tc.b, addrOf(a), addrOf(b))
		}
	}
	a, _ := net.ResolveTCPAddr("tcp", "[2001:db8:1:2::1]:1")
	b, _ := net.ResolveTCPAddr("tcp", "[2001:db8:1:3::1]:1")
	if addrOf(a) == addrOf(b) {
		t.Error("different /64s count as one client")
	}
}

// TestTrustedProxy: a trusted proxy's sockets are not limited per address,
// its clients' upgrades are rate limited one by one (X-Forwarded-For), and
// the same header from anyone else changes nothing.
func TestTrustedProxy(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{MaxConnsPerAddr: 2, UpgradesPerSecond: 0.01, UpgradeBurst: 1,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.10/32")}})
	te.publishWait(snap(time.Now(), 10))
	addr := te.Addr().String()
	upgrade := func(src string, status int, headers ...string) {
		t.Helper()
		c := dialFrom(t, src, addr)
		c.sendRaw([]byte(upgradeWith(wsPath, headers...)))
		c.readHTTPResponse(status)
	}
	for _, client := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		upgrade("127.0.0.10", http.StatusSwitchingProtocols, "X-Forwarded-For: 198.51.100.7, "+client)
	}
	upgrade("127.0.0.10", http.StatusTooManyRequests, "X-Forwarded-For: "+"203.0.113.1")
	upgrade("127.0.0.10", http.StatusSwitchingProtocols, "X-Real-IP: 203.0.113.9")
	// Untrusted: the header is ignored, the socket's own address counts.
	upgrade("127.0.0.11", http.StatusSwitchingProtocols, "X-Forwarded-For: 203.0.113.4")
	upgrade("127.0.0.11", http.StatusTooManyRequests, "X-Forwarded-For: 203.0.113.5")
}
