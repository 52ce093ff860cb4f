package auth

import (
	"encoding/base64"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

var hsMethod = jwt.SigningMethodHS256

// signRaw signs arbitrary claims JSON with HS256.
func signRaw(t *testing.T, key []byte, claims string) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	head := b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64([]byte(claims))
	sig, err := hsMethod.Sign(head, key)
	if err != nil {
		t.Fatal(err)
	}
	return head + "." + b64(sig)
}
