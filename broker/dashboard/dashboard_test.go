package dashboard_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/dashboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	dashboard.New().Mount(mux)
	mux.HandleFunc("GET /api/metrics/list", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{}") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestServesPageAndAssets(t *testing.T) {
	srv := serve(t)
	tests := []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/dashboard/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/dashboard/chart.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/dashboard/style.css", 200, "text/css; charset=utf-8"},
		{"GET", "/dashboard/icon.svg", 200, "image/svg+xml"},
		{"GET", "/dashboard/index.html", 404, ""},
		{"GET", "/dashboard/missing.js", 404, ""},
		{"GET", "/dashboard/../go.mod", 404, ""},
		{"GET", "/index.html", 404, ""},
		{"POST", "/", 405, ""},
		{"GET", "/api/metrics/list", 200, ""}, // the rest of the mux is untouched
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.contentType == "" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tt.contentType)
			}
			for k, want := range map[string]string{
				"Content-Security-Policy": dashboard.ContentSecurityPolicy,
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"Cache-Control":           "no-cache",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tt.method == "GET" && len(body) == 0 {
				t.Error("empty body")
			}
		})
	}
}

func TestRevalidatesByETag(t *testing.T) {
	srv := serve(t)
	resp, err := http.Get(srv.URL + "/dashboard/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req, _ := http.NewRequest("GET", srv.URL+"/dashboard/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("status %d with a matching ETag, want 304", resp.StatusCode)
	}
}

// TestSelfContained proves the page works offline: every file it references
// is served here, and nothing names another origin.
func TestSelfContained(t *testing.T) {
	srv := serve(t)
	page, err := os.ReadFile(filepath.Join("static", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 3 {
		t.Fatalf("found %d references in index.html; the pattern no longer matches", len(refs))
	}
	for _, m := range refs {
		resp, err := http.Get(srv.URL + m[1])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("index.html references %s, which answers %d", m[1], resp.StatusCode)
		}
	}
	err = fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join("static", p))
		if err != nil {
			return err
		}
		if u := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`).Find(b); u != nil && !strings.Contains(string(u), "www.w3.org") {
			t.Errorf("%s names another origin: %s", p, u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
