package edge

import (
	"fmt"
	"net/url"
	"strings"
)

// originPolicy decides which browser pages may open a WebSocket or call the
// REST API. Requests without Origin (non-browser clients) always pass: the
// check protects visitors' browsers from other sites, and a non-browser
// client can send whatever Origin it likes anyway.
type originPolicy struct {
	any      bool
	exact    map[string]bool // "https://app.example.com:8443", lower case
	patterns []originPattern
}

// originPattern is "*.example.com" (any scheme and port) or
// "https://*.example.com[:port]".
type originPattern struct {
	scheme, suffix, port string
}

// newOriginPolicy parses Config.AllowedOrigins.
func newOriginPolicy(allowed []string, anyOrigin bool) (originPolicy, error) {
	p := originPolicy{any: anyOrigin, exact: map[string]bool{}}
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "*" {
			p.any = true
			continue
		}
		scheme, rest, hasScheme := strings.Cut(a, "://")
		if !hasScheme {
			scheme, rest = "", a
		}
		if host, ok := strings.CutPrefix(rest, "*."); ok {
			hostname, port, _ := strings.Cut(host, ":")
			if hostname == "" || strings.ContainsAny(hostname, "*/") || (!hasScheme && port != "") {
				return p, fmt.Errorf("allowed origin %q: want https://app.example.com, https://*.example.com or *.example.com", a)
			}
			p.patterns = append(p.patterns, originPattern{scheme: scheme, suffix: "." + hostname, port: port})
			continue
		}
		u, err := url.Parse(a)
		if a == "null" {
			p.exact[a] = true
			continue
		}
		if err != nil || !hasScheme || u.Host == "" || (u.Path != "" && u.Path != "/") || strings.Contains(u.Host, "*") {
			return p, fmt.Errorf("allowed origin %q: want scheme://host[:port], a *.domain pattern or null", a)
		}
		p.exact[u.Scheme+"://"+u.Host] = true
	}
	return p, nil
}

// allows reports whether a request with these Origin values and Host may
// proceed. With no list, only same-origin pages (Origin's host equals Host)
// pass; more than one Origin never does.
func (p *originPolicy) allows(origins []string, host string) bool {
	switch {
	case len(origins) == 0:
		return true
	case len(origins) > 1:
		return false
	case p.any:
		return true
	}
	o := strings.ToLower(origins[0])
	if p.exact[o] {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	if len(p.exact) == 0 && len(p.patterns) == 0 {
		return host != "" && strings.EqualFold(u.Host, host)
	}
	hostname, port := u.Hostname(), u.Port()
	for _, pt := range p.patterns {
		if strings.HasSuffix(hostname, pt.suffix) && len(hostname) > len(pt.suffix) &&
			(pt.scheme == "" || pt.scheme == u.Scheme) && (pt.port == "" || pt.port == port) {
			return true
		}
	}
	return false
}
