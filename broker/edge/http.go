package edge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/broker/auth"
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
	for _, p := range e.cfg.PublicHTTP {
		mux.Handle(p, e.guardHTTP(fallback, false))
	}
	mux.Handle("/", e.guardHTTP(fallback, true))
	return &http.Server{
		Handler: mux,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
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
	pc := connOf(r)
	if pc == nil {
		http.Error(w, "connection not admitted", http.StatusInternalServerError)
		return
	}
	h := upgradeHead{host: r.Host, origins: r.Header.Values("Origin"), authorization: r.Header.Values("Authorization"),
		protocols: r.Header.Values("Sec-WebSocket-Protocol")}
	en := pc.admission()
	if en == nil {
		http.Error(w, "connection not admitted", http.StatusInternalServerError)
		return
	}
	init, rej := e.admitRequest(ctx, h, r.URL.RawQuery, en)
	if rej != nil {
		e.writeRejection(w, rej)
		return
	}
	u := ws.HTTPUpgrader{Timeout: e.cfg.HandshakeTimeout, Protocol: func(p string) bool { return isBearerProtocol([]byte(p)) }}
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
		init.lim = pc.takeAdmission() // released by the conn from now on
	}
	_ = nc.SetDeadline(time.Time{})
	pollable, err := e.pollable(nc)
	if err != nil {
		e.log.Error("serve TLS connection", "err", err)
		init.st.release()
		e.limits.close(init.lim)
		_ = nc.Close()
		return
	}
	if !e.attach(pollable, leftover, init) {
		e.limits.close(init.lim)
		_ = pollable.Close()
	}
}

type connKey struct{}

// connOf is the admitted connection a request arrived on.
func connOf(r *http.Request) *prefixConn {
	pc, _ := r.Context().Value(connKey{}).(*prefixConn)
	return pc
}

// writeRejection answers an HTTP request with a refusal.
func (e *Edge) writeRejection(w http.ResponseWriter, r *upgradeRejection) {
	e.m.rejected(r.reason)
	if r.kind != "" {
		e.m.errorsByType[r.kind].Inc()
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(r.header, "\r\n"), "\r\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			w.Header().Set(k, v)
		}
	}
	http.Error(w, r.msg, r.status)
}

// guardHTTP admits a Config.HTTP request: per-address rate, Origin, and a
// token unless the path is public. The handler finds the grant with
// auth.GrantFrom.
func (e *Edge) guardHTTP(next http.Handler, needToken bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if en := connOf(r).admission(); en != nil {
			client := e.limits.client(en, r.Header.Values("X-Forwarded-For"), r.Header.Get("X-Real-IP"))
			if wait := e.limits.take(client, bucketREST); wait > 0 {
				e.writeRejection(w, rateRejection(rejectRESTRate,
					fmt.Sprintf("an address may make %g requests per second", e.cfg.RESTRequestsPerSecond), wait))
				return
			}
		}
		if !e.origins.allows(r.Header.Values("Origin"), r.Host) {
			e.writeRejection(w, originRejection())
			return
		}
		if !needToken {
			next.ServeHTTP(w, r)
			return
		}
		g, rej := e.authenticate(r.Context(), r.Header.Values("Authorization"), r.URL.RawQuery, nil)
		if rej != nil {
			e.writeRejection(w, rej)
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithGrant(r.Context(), g)))
	})
}
