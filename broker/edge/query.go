package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// The upgrade URL may carry the connection's initial subscription scope and
// a replay start: /ws/metrics?region=eu, ?instance=gw-eu-1, ?since=<RFC 3339>
// (alone or with a scope). Other parameters are ignored, as unknown
// subscription fields are. A malformed parameter is refused before the
// upgrade with 400 and a text/plain body naming it; a well-formed scope
// that is not known gets 404 with the list of known scopes; when history
// could not be searched for it, 503.

// errBadQuery is wrapped by parseUpgradeQuery's errors.
var errBadQuery = errors.New("bad query parameter")

// parseUpgradeQuery returns the subscription a connection starts with: the
// default one with the URL's scope and since.
func parseUpgradeQuery(rawQuery string) (proto.Subscription, error) {
	sub := proto.DefaultSubscription()
	if rawQuery == "" {
		return sub, nil
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return sub, fmt.Errorf("%w: the query string is not URL-encoded: %v", errBadQuery, err)
	}
	one := func(name string) (string, bool, error) {
		vs, ok := values[name]
		switch {
		case !ok:
			return "", false, nil
		case len(vs) > 1:
			return "", false, fmt.Errorf("%w: %s is given %d times; give it once", errBadQuery, name, len(vs))
		case vs[0] == "":
			return "", false, fmt.Errorf("%w: %s is empty", errBadQuery, name)
		}
		return vs[0], true, nil
	}
	region, _, err := one("region")
	if err != nil {
		return sub, err
	}
	instance, _, err := one("instance")
	if err != nil {
		return sub, err
	}
	if sub.Scope, err = proto.ScopeOf(region, instance); err != nil {
		return sub, fmt.Errorf("%w: %v", errBadQuery, err)
	}
	since, ok, err := one("since")
	if err != nil {
		return sub, err
	}
	if ok {
		if sub.Since, err = proto.ParseSince(since); err != nil {
			return sub, fmt.Errorf("%w: %v", errBadQuery, err)
		}
	}
	return sub, nil
}

// requestQuery extracts the raw query of a request line such as
// "GET /ws/metrics?region=eu HTTP/1.1".
func requestQuery(line []byte) string {
	line = bytes.TrimRight(line, "\r\n")
	target, _, _ := bytes.Cut(line[min(len(line), len("GET ")):], []byte(" "))
	_, q, _ := bytes.Cut(target, []byte("?"))
	q, _, _ = bytes.Cut(q, []byte("#"))
	return string(q)
}

// connInit is what a connection starts with: its subscription, its
// scope's state (pinned for the connection), what its token grants, and its
// address's admission entry.
type connInit struct {
	sub   proto.Subscription
	st    *scopeState
	grant auth.Grant
	lim   *addrEntry // released when the connection closes
	rate  *addrEntry // whose lookup rate the connection spends (the client behind a trusted proxy)
}

// upgradeRejection is an HTTP answer refusing an upgrade.
type upgradeRejection struct {
	status int
	msg    string
	kind   string // errors_total type, if any
	reason string // rejections_total reason, if any
	header string // extra header lines, each ending in CRLF
}

// upgradeTarget parses an upgrade request's query and resolves its scope.
// It may wait on JetStream (a scope not seen live), on the handshake or HTTP
// goroutine, bounded by HandshakeTimeout and HistoryTimeout.
func (e *Edge) upgradeTarget(ctx context.Context, rawQuery string, g auth.Grant, client *addrEntry) (connInit, *upgradeRejection) {
	sub, err := parseUpgradeQuery(rawQuery)
	if err != nil {
		return connInit{}, &upgradeRejection{status: http.StatusBadRequest, msg: err.Error(), kind: errTypeBadQuery}
	}
	if !g.Allows(sub.Scope) {
		return connInit{}, scopeRejection(sub.Scope, g)
	}
	ctx, cancel := context.WithTimeout(ctx, min(e.cfg.HandshakeTimeout, e.cfg.HistoryTimeout))
	defer cancel()
	st, err := e.resolveScope(ctx, sub.Scope, client)
	var limited *lookupLimitedError
	if errors.As(err, &limited) {
		return connInit{}, rateRejection(rejectLookupRate, "this address looked up too many scopes not seen live", limited.wait)
	}
	if err != nil {
		mctx, mcancel := context.WithTimeout(context.Background(), time.Second)
		defer mcancel()
		msg := e.scopeErrorMessage(mctx, sub.Scope, g, err)
		if errors.Is(err, errUnknownScope) {
			return connInit{}, &upgradeRejection{status: http.StatusNotFound, msg: msg, kind: errTypeUnknownScope}
		}
		return connInit{}, &upgradeRejection{status: http.StatusServiceUnavailable, msg: msg, kind: errTypeUnknownScope}
	}
	return connInit{sub: sub, st: st, grant: g, rate: client}, nil
}

// response is the rejection as a complete HTTP/1.1 response that closes
// the connection.
func (r *upgradeRejection) response() []byte {
	body := r.msg + "\n"
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: %d\r\n\r\n%s",
		r.status, http.StatusText(r.status), r.header, len(body), body)
	return []byte(b.String())
}
