package edge

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// newHTTPServer builds the server for every request that is not a
// first-request WebSocket upgrade: /healthz, /readyz, a WebSocket upgrade
// arriving on a reused keep-alive connection, and Config.HTTP for the rest.
func (e *Edge) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", e.serveHealthz)
	mux.HandleFunc("/readyz", e.serveReadyz)
	mux.HandleFunc(wsPath, e.serveUpgradeHTTP)
	fallback := e.cfg.HTTP
	if fallback == nil {
		fallback = http.NotFoundHandler()
	}
	mux.Handle("/", fallback)
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: e.cfg.HandshakeTimeout,
		IdleTimeout:       e.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
}

// serveHealthz is 200 while the edge serves, 503 before Run and once
// shutdown began.
func (e *Edge) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !e.running.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "shutting down\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// serveReadyz is 200 when Ready, else 503 with the reason.
func (e *Edge) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	reason, ok := e.Ready()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, reason+"\n")
}

// serveUpgradeHTTP upgrades a /ws/metrics request that reached the HTTP
// server, which happens when a client reuses a keep-alive connection, and
// then treats the socket like any other WebSocket.
func (e *Edge) serveUpgradeHTTP(w http.ResponseWriter, r *http.Request) {
	// http.Server.Shutdown does not wait for hijacked connections: Run
	// waits for this handler itself.
	e.upgradeWG.Add(1)
	defer e.upgradeWG.Done()
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		// Answered here rather than by the upgrader, which would hijack the
		// connection first and so end keep-alive for a plain request.
		e.m.errorsByType[errTypeHandshake].Inc()
		http.Error(w, "this endpoint speaks WebSocket: send an Upgrade: websocket request", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(e.hsCtx, cancel)()
	init, rej := e.upgradeTarget(ctx, r.URL.RawQuery)
	if rej != nil {
		e.m.errorsByType[rej.kind].Inc()
		http.Error(w, rej.msg, rej.status)
		return
	}
	u := ws.HTTPUpgrader{Timeout: e.cfg.HandshakeTimeout}
	nc, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		// The upgrader has answered with an HTTP error on the hijacked
		// connection, which is ours to close.
		init.st.release()
		e.m.errorsByType[errTypeHandshake].Inc()
		if nc != nil {
			_ = nc.Close()
		}
		return
	}
	var leftover []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		leftover = append(leftover, p...)
	}
	if pc, ok := nc.(*prefixConn); ok {
		leftover = append(leftover, pc.takePrefix()...)
	}
	_ = nc.SetDeadline(time.Time{})
	if !e.attach(nc, leftover, init) {
		_ = nc.Close()
	}
}
