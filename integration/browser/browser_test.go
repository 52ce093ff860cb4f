package browser_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/integration/browser"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPageRecordsErrors proves the error capture that other tests rely on to
// say "no uncaught exception": a page that throws must be reported.
func TestPageRecordsErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><p id=x>0</p><script>
let n = 0;
setInterval(() => { document.getElementById('x').textContent = ++n; }, 20);
setTimeout(() => { console.error('boom', 42); }, 10);
setTimeout(() => { undefined.toFixed(); }, 30);
</script>`))
	}))
	defer srv.Close()
	b := browser.Start(t, browser.Options{})
	p := b.NewPage()
	p.Navigate(srv.URL)
	if err := p.WaitJS(10*time.Second, `Number(document.getElementById('x').textContent) > 3`); err != nil {
		t.Fatal(err)
	}
	var errs []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if errs = p.Errors(); len(errs) >= 2 {
			break
		}
		if err := p.WaitJS(time.Second, `true`); err != nil {
			t.Fatal(err)
		}
	}
	joined := strings.Join(errs, "\n")
	if !strings.Contains(joined, "error: boom 42") || !strings.Contains(joined, "Uncaught TypeError") {
		t.Fatalf("errors recorded = %q; want the console.error and the uncaught TypeError", errs)
	}
}
