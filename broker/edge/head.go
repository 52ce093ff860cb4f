package edge

import (
	"bytes"
	"errors"
	"fmt"
)

// upgradeHead is what admission reads from a raw upgrade request head:
// only the headers it needs, each value kept as sent.
type upgradeHead struct {
	host          string
	origins       []string
	authorization []string
	protocols     []string
	forwardedFor  []string // X-Forwarded-For values
	realIP        string   // X-Real-IP
}

var errBadHead = errors.New("malformed request head")

// parseHead scans the header lines of a request head (request line first,
// bare LF tolerated). It never allocates for headers it ignores; a line
// without a colon, or a header name with a space or control byte, is
// malformed (request smuggling relies on lenient parsers).
func parseHead(head []byte) (upgradeHead, error) {
	var h upgradeHead
	first := true
	for line := range bytes.Lines(head) {
		line = bytes.TrimRight(line, "\r\n")
		if first {
			first = false
			continue
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return h, fmt.Errorf("%w: header line without a name", errBadHead)
		}
		for _, c := range name {
			if c <= ' ' || c >= 0x7f {
				return h, fmt.Errorf("%w: invalid header name", errBadHead)
			}
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			if h.host != "" {
				return h, fmt.Errorf("%w: more than one Host header", errBadHead)
			}
			h.host = string(value)
		case bytes.EqualFold(name, []byte("Origin")):
			h.origins = append(h.origins, string(value))
		case bytes.EqualFold(name, []byte("Authorization")):
			h.authorization = append(h.authorization, string(value))
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			h.protocols = append(h.protocols, string(value))
		case bytes.EqualFold(name, []byte("X-Forwarded-For")):
			h.forwardedFor = append(h.forwardedFor, string(value))
		case bytes.EqualFold(name, []byte("X-Real-IP")):
			h.realIP = string(value)
		}
	}
	return h, nil
}
