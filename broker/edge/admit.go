package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// Admission: every refusal happens before the upgrade, as plain HTTP with
// "Connection: close", and is counted in rejections_total by reason.
//
//	401 no_token, invalid_token, expired_token (with WWW-Authenticate: Bearer)
//	403 origin, scope
//	429 addr_conns, upgrade_rate, lookup_rate, rest_rate (with Retry-After)
//	503 edge_full, handshakes (with Retry-After)
//	400 plaintext: plain HTTP on a TLS listener

// Verifier checks a bearer token; *auth.Verifier is one.
type Verifier interface {
	Verify(ctx context.Context, token string) (auth.Grant, error)
}

// Rejection reasons (rejections_total label values).
const (
	rejectNoToken      = "no_token"
	rejectInvalidToken = "invalid_token"
	rejectExpiredToken = "expired_token"
	rejectOrigin       = "origin"
	rejectScope        = "scope"
	rejectAddrConns    = "addr_conns"
	rejectUpgradeRate  = "upgrade_rate"
	rejectLookupRate   = "lookup_rate"
	rejectRESTRate     = "rest_rate"
	rejectEdgeFull     = "edge_full"
	rejectHandshakes   = "handshakes"
	rejectPlaintext    = "plaintext"
)

var rejectReasons = []string{
	rejectNoToken, rejectInvalidToken, rejectExpiredToken, rejectOrigin, rejectScope, rejectAddrConns,
	rejectUpgradeRate, rejectLookupRate, rejectRESTRate, rejectEdgeFull, rejectHandshakes, rejectPlaintext,
}

// errLookupRateLimited is wrapped by resolveScope when an address made too
// many lookups of scopes not held in memory.
var errLookupRateLimited = errors.New("scope lookups rate limited")

type lookupLimitedError struct{ wait time.Duration }

func (e *lookupLimitedError) Error() string {
	return fmt.Sprintf("%v: this address may look up scopes not seen live at most %s; retry in %ds",
		errLookupRateLimited, "a few times a second", retryAfter(e.wait))
}

func (e *lookupLimitedError) Unwrap() error { return errLookupRateLimited }

// authenticate checks the token of a request (from its Authorization
// values, query and Sec-WebSocket-Protocol values). Without Config.Auth
// every request passes with auth.Anonymous.
func (e *Edge) authenticate(ctx context.Context, authorization []string, rawQuery string, protocols []string) (auth.Grant, *upgradeRejection) {
	if e.cfg.Auth == nil {
		return auth.Anonymous, nil
	}
	p, err := auth.Extract(authorization, rawQuery, protocols)
	if err == nil {
		var g auth.Grant
		if g, err = e.cfg.Auth.Verify(ctx, p.Token); err == nil {
			return g, nil
		}
	}
	reason, challenge := rejectInvalidToken, `Bearer error="invalid_token"`
	switch {
	case errors.Is(err, auth.ErrNoToken):
		reason, challenge = rejectNoToken, `Bearer realm="meridian"`
	case errors.Is(err, auth.ErrExpired):
		reason = rejectExpiredToken
	}
	return auth.Grant{}, &upgradeRejection{
		status: http.StatusUnauthorized, reason: reason,
		msg:    "unauthorized: " + err.Error() + "; present a token as Authorization: Bearer <jwt>, ?token=<jwt> or Sec-WebSocket-Protocol: bearer.<jwt>",
		header: "WWW-Authenticate: " + challenge + "\r\n",
	}
}

func originRejection() *upgradeRejection {
	return &upgradeRejection{status: http.StatusForbidden, reason: rejectOrigin,
		msg: "forbidden: this Origin may not use the edge (see --allowed-origins)"}
}

func scopeRejection(scope proto.Scope, g auth.Grant) *upgradeRejection {
	return &upgradeRejection{status: http.StatusForbidden, reason: rejectScope, msg: scopeDeniedMessage(scope, g)}
}

func scopeDeniedMessage(scope proto.Scope, g auth.Grant) string {
	return fmt.Sprintf("scope %s is outside this token's scopes (%s)", scope, g)
}

func rateRejection(reason, what string, wait time.Duration) *upgradeRejection {
	s := retryAfter(wait)
	return &upgradeRejection{status: http.StatusTooManyRequests, reason: reason,
		msg:    fmt.Sprintf("too many requests: %s; retry in %ds", what, s),
		header: fmt.Sprintf("Retry-After: %d\r\n", s)}
}

// verdictRejection answers a socket refused at accept.
func (e *Edge) verdictRejection(v admitVerdict) *upgradeRejection {
	if v == admitEdgeFull {
		return &upgradeRejection{status: http.StatusServiceUnavailable, reason: rejectEdgeFull,
			msg: fmt.Sprintf("edge full: it serves at most %d connections; try another edge", e.cfg.MaxConns), header: "Retry-After: 5\r\n"}
	}
	return rateRejection(rejectAddrConns, fmt.Sprintf("an address may keep at most %d connections open", e.cfg.MaxConnsPerAddr), time.Second)
}

// reject counts r and returns its response bytes.
func (e *Edge) reject(r *upgradeRejection) []byte {
	e.m.rejected(r.reason)
	if r.kind != "" {
		e.m.errorsByType[r.kind].Inc()
	}
	return r.response()
}

// isBearerProtocol selects the Sec-WebSocket-Protocol value carrying the
// token: the browser fails a handshake whose answer names no protocol it
// offered.
func isBearerProtocol(p []byte) bool {
	n := len(auth.ProtocolPrefix)
	return len(p) > n && bytes.EqualFold(p[:n], []byte(auth.ProtocolPrefix))
}

// healthzRequest reports whether a request line asks for /healthz, which is
// answered even to an address over its limits.
func healthzRequest(line []byte) bool {
	return bytes.HasPrefix(line, []byte("GET /healthz ")) || bytes.HasPrefix(line, []byte("GET /healthz?"))
}

// healthzResponse is /healthz's answer on the refusal path.
func (e *Edge) healthzResponse() []byte {
	if !e.running.Load() {
		return []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nshutting down\n")
	}
	return []byte("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\nok\n")
}
