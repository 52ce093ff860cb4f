package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// errForcedShutdown is the cause of every request context a Node cancels when
// its drain runs out of time; the proxy's error handler answers those
// requests with 503 rather than treating them as client cancellations.
var errForcedShutdown = errors.New("gateway shut down before the request completed")

// newTransport builds the upstream transport. It is the gateway's own (never
// http.DefaultTransport), talks to the upstream directly (no environment
// proxy), bounds connecting and waiting for response headers by timeout, and
// keeps enough idle connections per host that a busy gateway reuses
// connections to its single upstream instead of churning them.
func newTransport(timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
}

// newReverseProxy forwards every request to upstream, joining paths and
// queries the way httputil.ProxyRequest.SetURL does, and sets X-Forwarded-For,
// -Host and -Proto from the inbound request (client-supplied values are
// dropped by ReverseProxy before Rewrite, so they cannot be spoofed).
func newReverseProxy(upstream *url.URL, transport http.RoundTripper, log *slog.Logger) *httputil.ReverseProxy {
	errLog := &rateLimitedLog{log: log}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
		},
		Transport: transport,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			proxyError(w, r, err, errLog)
		},
	}
}

// proxyError answers a request the upstream did not: 504 when the upstream
// timed out (connecting or awaiting headers), 502 for any other upstream
// failure, 503 when the gateway itself cancelled the request while shutting
// down, and nothing at all when the client went away (the middleware records
// 499). The client sees only the status text; the cause is logged.
func proxyError(w http.ResponseWriter, r *http.Request, err error, log *rateLimitedLog) {
	ctx := r.Context()
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errForcedShutdown) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		status = http.StatusGatewayTimeout
	}
	log.warn("upstream request failed", "status", status, "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, http.StatusText(status), status)
}

// rateLimitedLog logs at most one line per second. A dead upstream fails
// every request; one line per request would flood the log at exactly the
// moment it is needed. Suppressed lines are counted in the next one.
type rateLimitedLog struct {
	log        *slog.Logger
	next       atomic.Int64 // unix nanos before which lines are suppressed
	suppressed atomic.Uint64
}

func (l *rateLimitedLog) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(time.Second)) {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	l.log.Warn(msg, args...)
}
