package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// AssetPrefix is the path under which the page's scripts and stylesheet are
// served; the page itself is served at "/".
const AssetPrefix = "/dashboard/"

// ContentSecurityPolicy allows the page its own scripts, styles and
// connections (the WebSocket and REST API on the same origin) and nothing
// else: no inline script, no third-party origin, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the dashboard: GET / is the page, GET /dashboard/<file> its
// assets; anything else is 404.
type Handler struct {
	assets map[string]asset // by request path
}

// New returns the dashboard handler.
func New() *Handler {
	h := &Handler{assets: map[string]asset{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "static/")
		a := asset{
			body:        body,
			contentType: mime.TypeByExtension(path.Ext(name)),
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		if name == "index.html" {
			h.assets["/"] = a
		} else {
			h.assets[AssetPrefix+name] = a
		}
		return nil
	})
	if err != nil {
		// The files are compiled in: failing here is a build defect.
		panic(fmt.Sprintf("dashboard: read embedded files: %v", err))
	}
	return h
}

// Patterns are the ServeMux patterns the dashboard serves: GET / (exactly)
// and GET /dashboard/. They hold no data, so an edge that requires tokens
// serves them without one (edge.Config.PublicHTTP): a browser must load the
// page before it can present its token.
var Patterns = []string{"GET /{$}", "GET " + AssetPrefix}

// Mount serves the dashboard on mux at its Patterns.
func (h *Handler) Mount(mux *http.ServeMux) {
	for _, p := range Patterns {
		mux.Handle(p, h)
	}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	// The token travels in the fragment, which browsers never send, but a
	// page that links nowhere has no reason to leak its URL either.
	hd.Set("Referrer-Policy", "no-referrer")
	// Revalidate every load (cheap: 304 by ETag), so a new binary's page is
	// never mixed with an old cached script.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
