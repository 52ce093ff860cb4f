package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meridian-metrics/meridian/proto"
)

// ScopesClaim is the JWT claim restricting the scopes a token may read.
const ScopesClaim = "scopes"

// AllScopes in the scopes claim grants every scope.
const AllScopes = "*"

// Claims are the JWT claims Meridian reads: the registered ones and scopes.
type Claims struct {
	// Scopes lists the readable scopes (cluster, region.<r>, instance.<i>,
	// or *). Nil (claim absent) means all; an empty list means none.
	Scopes []string `json:"scopes,omitempty"`
	jwt.RegisteredClaims
}

// Grant is what a verified token allows. The zero Grant allows nothing and
// never expires; Anonymous allows everything.
type Grant struct {
	all     bool
	scopes  []proto.Scope
	expires time.Time
	subject string
}

// Anonymous is the grant of a server that does not require tokens.
var Anonymous = Grant{all: true}

// grantOf validates the scopes claim and builds the grant.
func grantOf(c *Claims) (Grant, error) {
	g := Grant{all: c.Scopes == nil, subject: c.Subject}
	if c.ExpiresAt != nil {
		g.expires = c.ExpiresAt.Time
	}
	for _, s := range c.Scopes {
		if s == AllScopes {
			g.all = true
			continue
		}
		sc, err := parseScope(s)
		if err != nil {
			return Grant{}, fmt.Errorf("%w: scopes claim: %v", ErrInvalidToken, err)
		}
		g.scopes = append(g.scopes, sc)
	}
	return g, nil
}

// parseScope parses one entry of the scopes claim other than *.
func parseScope(s string) (proto.Scope, error) {
	sc, err := proto.ParseScope(s)
	if err != nil {
		return proto.Scope{}, fmt.Errorf("%q is not cluster, region.<name>, instance.<name> or %s", s, AllScopes)
	}
	return sc, nil
}

// Allows reports whether the grant covers scope. A region grant does not
// cover that region's instances: scopes match exactly.
func (g Grant) Allows(scope proto.Scope) bool {
	return g.all || slices.Contains(g.scopes, scope)
}

// All reports whether the grant covers every scope.
func (g Grant) All() bool { return g.all }

// Expires is the token's expiry; zero for Anonymous.
func (g Grant) Expires() time.Time { return g.expires }

// Subject is the token's sub claim, for logs.
func (g Grant) Subject() string { return g.subject }

// String lists the granted scopes, for error messages.
func (g Grant) String() string {
	if g.all {
		return AllScopes
	}
	if len(g.scopes) == 0 {
		return "no scopes"
	}
	names := make([]string, len(g.scopes))
	for i, s := range g.scopes {
		names[i] = s.String()
	}
	return strings.Join(names, ", ")
}

type grantKey struct{}

// WithGrant returns ctx carrying g, for handlers behind an authenticating
// server.
func WithGrant(ctx context.Context, g Grant) context.Context {
	return context.WithValue(ctx, grantKey{}, g)
}

// GrantFrom is the grant in ctx; without one (a server that does not
// authenticate), Anonymous.
func GrantFrom(ctx context.Context) Grant {
	if g, ok := ctx.Value(grantKey{}).(Grant); ok {
		return g
	}
	return Anonymous
}
