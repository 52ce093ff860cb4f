package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintOptions describe a token to mint.
type MintOptions struct {
	// Scopes restricts the token (nil: every scope). Each is validated.
	Scopes []string
	// TTL sets exp = now + TTL; required (Verifiers require exp).
	TTL      time.Duration
	Audience string
	Issuer   string
	Subject  string
	// KeyID sets the kid header, which a JWKS looks the key up by.
	KeyID     string
	NotBefore time.Time
	Now       func() time.Time
}

// MintHMAC signs a HS256 token with secret.
func MintHMAC(secret []byte, o MintOptions) (string, error) {
	if len(secret) < MinHMACSecretBytes {
		return "", fmt.Errorf("mint token: HMAC secret has %d bytes; at least %d are required", len(secret), MinHMACSecretBytes)
	}
	return mint(jwt.SigningMethodHS256, secret, o)
}

// MintKey signs a token with an RSA (RS256), ECDSA (ES256/384/512 by
// curve) or Ed25519 (EdDSA) private key.
func MintKey(key crypto.Signer, o MintOptions) (string, error) {
	var m jwt.SigningMethod
	switch k := key.(type) {
	case *rsa.PrivateKey:
		m = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		switch k.Curve.Params().BitSize {
		case 256:
			m = jwt.SigningMethodES256
		case 384:
			m = jwt.SigningMethodES384
		case 521:
			m = jwt.SigningMethodES512
		default:
			return "", fmt.Errorf("mint token: unsupported ECDSA curve %s", k.Curve.Params().Name)
		}
	case ed25519.PrivateKey:
		m = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("mint token: key of type %T is not RSA, ECDSA or Ed25519", key)
	}
	return mint(m, key, o)
}

func mint(m jwt.SigningMethod, key any, o MintOptions) (string, error) {
	if o.TTL <= 0 {
		return "", errors.New("mint token: a positive TTL is required")
	}
	for _, s := range o.Scopes {
		if s == AllScopes {
			continue
		}
		if _, err := parseScope(s); err != nil {
			return "", fmt.Errorf("mint token: scope %v", err)
		}
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	t := now()
	c := mintClaims{RegisteredClaims: jwt.RegisteredClaims{
		IssuedAt:  jwt.NewNumericDate(t),
		ExpiresAt: jwt.NewNumericDate(t.Add(o.TTL)),
		Issuer:    o.Issuer,
		Subject:   o.Subject,
	}}
	if o.Scopes != nil {
		c.Scopes = &o.Scopes // an empty list is kept: it grants nothing
	}
	if o.Audience != "" {
		c.Audience = jwt.ClaimStrings{o.Audience}
	}
	if !o.NotBefore.IsZero() {
		c.NotBefore = jwt.NewNumericDate(o.NotBefore)
	}
	tok := jwt.NewWithClaims(m, c)
	if o.KeyID != "" {
		tok.Header["kid"] = o.KeyID
	}
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("mint token: sign: %w", err)
	}
	return s, nil
}

// mintClaims writes an empty scopes list, which Claims would omit.
type mintClaims struct {
	Scopes *[]string `json:"scopes,omitempty"`
	jwt.RegisteredClaims
}
