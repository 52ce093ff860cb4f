package auth

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Where a token may be presented.
const (
	// QueryParam is the URL parameter carrying a token (?token=).
	QueryParam = "token"
	// ProtocolPrefix marks a Sec-WebSocket-Protocol value carrying a token:
	// "bearer.<jwt>". Browsers cannot set headers on a WebSocket.
	ProtocolPrefix = "bearer."
	// maxTokenBytes bounds a token before any parsing.
	maxTokenBytes = 4096
)

// ErrAmbiguous: more than one token (or Authorization header) was sent.
var ErrAmbiguous = errors.New("more than one token presented")

// Presented is where a request's token came from.
type Presented struct {
	Token string
	// Protocol is the Sec-WebSocket-Protocol value that carried the token,
	// which the server must select in its answer; empty otherwise.
	Protocol string
}

// Extract finds the token of a request from its Authorization header
// values, its raw query and its Sec-WebSocket-Protocol header values. No
// token is (Presented{}, nil); two sources, or a malformed one, an error
// wrapping ErrInvalidToken or ErrAmbiguous.
func Extract(authorization []string, rawQuery string, protocols []string) (Presented, error) {
	var (
		p Presented
		n int
	)
	switch len(authorization) {
	case 0:
	case 1:
		scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return Presented{}, fmt.Errorf("%w: Authorization must be \"Bearer <token>\"", ErrInvalidToken)
		}
		p.Token = strings.TrimSpace(tok)
		n++
	default:
		return Presented{}, fmt.Errorf("%w: %d Authorization headers", ErrAmbiguous, len(authorization))
	}
	if strings.Contains(rawQuery, QueryParam+"=") {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return Presented{}, fmt.Errorf("%w: query string is not URL-encoded", ErrInvalidToken)
		}
		switch vs := q[QueryParam]; len(vs) {
		case 0:
		case 1:
			p.Token = vs[0]
			n++
		default:
			return Presented{}, fmt.Errorf("%w: %d token parameters", ErrAmbiguous, len(vs))
		}
	}
	for _, h := range protocols {
		for v := range strings.SplitSeq(h, ",") {
			v = strings.TrimSpace(v)
			if len(v) > len(ProtocolPrefix) && strings.EqualFold(v[:len(ProtocolPrefix)], ProtocolPrefix) {
				p.Token, p.Protocol = v[len(ProtocolPrefix):], v
				n++
			}
		}
	}
	switch {
	case n > 1:
		return Presented{}, fmt.Errorf("%w: send a token in one place only", ErrAmbiguous)
	case n == 1 && p.Token == "":
		return Presented{}, fmt.Errorf("%w: the token is empty", ErrInvalidToken)
	case len(p.Token) > maxTokenBytes:
		return Presented{}, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	return p, nil
}
