package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/integration/browser"
)

// TestBrowserTokenAndOrigin: a real Chromium on an allowed page connects
// with its token as a Sec-WebSocket-Protocol value (the only way a browser
// can send one) and gets the offered value echoed; the same token from a
// page of another origin, or no token, is refused before the upgrade.
func TestBrowserTokenAndOrigin(t *testing.T) {
	secret := []byte(strings.Repeat("k", 40))
	v, err := auth.NewVerifier(context.Background(), auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok, err := auth.MintHMAC(secret, auth.MintOptions{TTL: time.Hour, Scopes: []string{"cluster"}})
	if err != nil {
		t.Fatal(err)
	}
	var wsURL string // set once the cluster runs, before any page loads
	page := func() http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<!doctype html><script>
window.result = {};
const ok = new WebSocket(%q, ["bearer." + %q]);
ok.onmessage = (m) => { window.result.type = JSON.parse(m.data).type; window.result.protocol = ok.protocol; };
ok.onerror = () => { window.result.okError = true; };
</script>`, wsURL, tok)
		})
	}
	allowed := httptest.NewServer(page())
	defer allowed.Close()
	c := startCluster(t, clusterOptions{edge: edge.Config{Auth: v, AllowedOrigins: []string{allowed.URL}}})
	wsURL = c.wsURL
	other := httptest.NewServer(page())
	defer other.Close()
	anon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><script>
window.result = {};
const s = new WebSocket(%q);
s.onopen = () => { window.result.opened = true; };
s.onerror = () => { window.result.okError = true; };
</script>`, c.wsURL)
	}))
	defer anon.Close()

	b := browser.Start(t, browser.Options{})
	good := b.NewPage()
	good.Navigate(allowed.URL)
	if err := good.WaitJS(20*time.Second, `window.result.type === "Snapshot"`); err != nil {
		t.Fatal(err)
	}
	if proto, err := browser.Eval[string](good, `window.result.protocol`); err != nil || proto != "bearer."+tok {
		t.Fatalf("selected protocol %q (%v), want the offered bearer value", proto, err)
	}
	if errs := good.Errors(); len(errs) > 0 {
		t.Fatalf("console errors on the allowed page: %q", errs)
	}
	for name, srv := range map[string]*httptest.Server{"other origin": other, "no token": anon} {
		p := b.NewPage()
		p.Navigate(srv.URL)
		if err := p.WaitJS(20*time.Second, `window.result.okError === true`); err != nil {
			t.Fatalf("%s: the WebSocket was not refused: %v", name, err)
		}
		if opened, _ := browser.Eval[bool](p, `window.result.opened === true || window.result.type !== undefined`); opened {
			t.Fatalf("%s: the WebSocket opened", name)
		}
	}
}
