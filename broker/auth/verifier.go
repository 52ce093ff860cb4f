package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Defaults for Config's zero fields.
const (
	// DefaultLeeway is the clock skew tolerated on exp and nbf.
	DefaultLeeway = 30 * time.Second
	// DefaultJWKSRefresh is how often a JWKS URL is fetched again (a token
	// with an unknown kid also triggers a fetch, at most once a minute).
	DefaultJWKSRefresh = 5 * time.Minute
	// DefaultJWKSTimeout bounds one JWKS fetch.
	DefaultJWKSTimeout = 10 * time.Second
	// MinHMACSecretBytes is the shortest HMAC secret accepted (RFC 7518
	// §3.2: at least the hash size).
	MinHMACSecretBytes = 32
)

// Sentinel errors; every verification error wraps one of them.
var (
	// ErrNoToken: the request carries no token.
	ErrNoToken = errors.New("no bearer token")
	// ErrInvalidToken: malformed, bad signature, wrong key, aud or iss.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired: past exp (beyond the leeway).
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: before nbf (beyond the leeway).
	ErrNotYetValid = errors.New("token not valid yet")
)

// Config says which tokens a Verifier accepts. At least one key source is
// required.
type Config struct {
	// HMACSecret verifies HS256/384/512 tokens; at least
	// MinHMACSecretBytes long.
	HMACSecret []byte
	// PublicKeys verify RS*/PS* (RSA), ES* (ECDSA) and EdDSA tokens; see
	// ParsePublicKeysPEM.
	PublicKeys []crypto.PublicKey
	// JWKSURL is fetched at start, then every JWKSRefresh and when a token
	// names an unknown kid.
	JWKSURL string
	// JWKSRefresh defaults to DefaultJWKSRefresh; JWKSTimeout to
	// DefaultJWKSTimeout.
	JWKSRefresh time.Duration
	JWKSTimeout time.Duration
	// HTTPClient fetches the JWKS; default http.DefaultClient.
	HTTPClient *http.Client
	// Audience, when set, must be in the token's aud.
	Audience string
	// Issuer, when set, must be the token's iss.
	Issuer string
	// Leeway is the skew tolerated on exp and nbf; default DefaultLeeway.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = DefaultJWKSRefresh
	}
	if c.JWKSTimeout == 0 {
		c.JWKSTimeout = DefaultJWKSTimeout
	}
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	if c.Leeway == 0 {
		c.Leeway = DefaultLeeway
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.HMACSecret) == 0 && len(c.PublicKeys) == 0 && c.JWKSURL == "":
		return errors.New("no key: set an HMAC secret, public keys or a JWKS URL")
	case len(c.HMACSecret) > 0 && len(c.HMACSecret) < MinHMACSecretBytes:
		return fmt.Errorf("HMAC secret has %d bytes; at least %d are required", len(c.HMACSecret), MinHMACSecretBytes)
	case c.Leeway < 0, c.JWKSRefresh < 0, c.JWKSTimeout < 0:
		return errors.New("leeway, JWKS refresh and JWKS timeout must not be negative")
	}
	for _, k := range c.PublicKeys {
		switch k.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return fmt.Errorf("public key of type %T is not RSA, ECDSA or Ed25519", k)
		}
	}
	return nil
}

// Verifier checks tokens. Build it with NewVerifier; Close it.
type Verifier struct {
	cfg     Config
	parser  *jwt.Parser
	static  jwt.VerificationKeySet
	jwks    keyfunc.Keyfunc
	methods map[string]bool // algorithms the static keys verify
	cancel  context.CancelFunc
}

var (
	hmacMethods  = []string{"HS256", "HS384", "HS512"}
	rsaMethods   = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ecdsaMethods = []string{"ES256", "ES384", "ES512"}
	edMethods    = []string{"EdDSA"}
)

// NewVerifier validates cfg and, with a JWKS URL, fetches it once (an
// unreachable URL is an error, after at most JWKSTimeout) and starts
// refreshing it until Close; ctx's values reach those fetches, but its end
// does not stop the refresh (Close does).
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new token verifier: %w", err)
	}
	cfg = cfg.withDefaults()
	v := &Verifier{cfg: cfg, methods: map[string]bool{}}
	allow := func(ms []string) {
		for _, m := range ms {
			v.methods[m] = true
		}
	}
	if len(cfg.HMACSecret) > 0 {
		v.static.Keys = append(v.static.Keys, cfg.HMACSecret)
		allow(hmacMethods)
	}
	for _, k := range cfg.PublicKeys {
		v.static.Keys = append(v.static.Keys, k)
		switch k.(type) {
		case *rsa.PublicKey:
			allow(rsaMethods)
		case *ecdsa.PublicKey:
			allow(ecdsaMethods)
		case ed25519.PublicKey:
			allow(edMethods)
		}
	}
	if cfg.JWKSURL != "" {
		// A JWKS holds asymmetric keys only: HS* stays tied to the secret.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		noErr := false
		k, err := keyfunc.NewDefaultOverrideCtx(rctx, []string{cfg.JWKSURL}, keyfunc.Override{
			Client: cfg.HTTPClient, HTTPTimeout: cfg.JWKSTimeout, RefreshInterval: cfg.JWKSRefresh,
			NoErrorReturnFirstHTTPReq: &noErr,
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("new token verifier: fetch JWKS %s: %w", cfg.JWKSURL, err)
		}
		v.jwks, v.cancel = k, cancel
	}
	methods := slices.Sorted(maps.Keys(v.methods))
	if v.jwks != nil {
		for _, ms := range [][]string{rsaMethods, ecdsaMethods, edMethods} {
			for _, m := range ms {
				if !v.methods[m] {
					methods = append(methods, m)
				}
			}
		}
	}
	v.parser = jwt.NewParser(v.parserOptions(methods)...)
	return v, nil
}

func (v *Verifier) parserOptions(methods []string) []jwt.ParserOption {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(v.cfg.Now),
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	return opts
}

// Close stops the JWKS refresh; it is idempotent.
func (v *Verifier) Close() {
	if v.cancel != nil {
		v.cancel()
	}
}

// Leeway is the skew tolerated on exp.
func (v *Verifier) Leeway() time.Duration { return v.cfg.Leeway }

// Verify checks token and returns what it grants. Errors wrap ErrNoToken,
// ErrInvalidToken, ErrExpired or ErrNotYetValid.
func (v *Verifier) Verify(ctx context.Context, token string) (Grant, error) {
	if token == "" {
		return Grant{}, ErrNoToken
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		alg, _ := t.Header["alg"].(string)
		if v.jwks == nil || strings.HasPrefix(alg, "HS") {
			return v.static, nil
		}
		// Asymmetric with a JWKS: the key its kid names, and the static
		// keys besides.
		set := jwt.VerificationKeySet{Keys: slices.Clone(v.static.Keys)}
		if k, err := v.jwks.KeyfuncCtx(ctx)(t); err == nil {
			set.Keys = append(set.Keys, k)
		} else if len(set.Keys) == 0 {
			return nil, err
		}
		return set, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return Grant{}, fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return Grant{}, fmt.Errorf("%w: %v", ErrNotYetValid, err)
	default:
		return Grant{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return grantOf(&claims)
}
