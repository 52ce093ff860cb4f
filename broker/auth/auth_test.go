package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func secret(b byte) []byte { return []byte(strings.Repeat(string(rune('a'+b%26)), 40)) }

func mustVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestVerifyRejects is the attacker's view: every token that must not pass.
func TestVerifyRejects(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rsaKey := must(rsa.GenerateKey(rand.Reader, 2048))
	otherRSA := must(rsa.GenerateKey(rand.Reader, 2048))
	v := mustVerifier(t, Config{HMACSecret: secret(0), PublicKeys: []crypto.PublicKey{&rsaKey.PublicKey},
		Audience: "meridian", Issuer: "ops", Now: clock})
	base := MintOptions{TTL: time.Hour, Audience: "meridian", Issuer: "ops", Now: clock}
	with := func(f func(*MintOptions)) MintOptions { o := base; f(&o); return o }
	good := must(MintHMAC(secret(0), base))
	parts := strings.Split(good, ".")
	pubDER := must(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	b64 := base64.RawURLEncoding.EncodeToString
	claims := b64([]byte(`{"exp":` + "9999999999" + `,"aud":"meridian","iss":"ops"}`))
	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"no token", "", ErrNoToken},
		{"garbage", "not.a.jwt", ErrInvalidToken},
		{"bad signature", parts[0] + "." + parts[1] + "." + b64([]byte("forged-signature-bytes-32-long!!")), ErrInvalidToken},
		{"claims swapped under a valid signature", parts[0] + "." + claims + "." + parts[2], ErrInvalidToken},
		{"wrong HMAC secret", must(MintHMAC(secret(1), base)), ErrInvalidToken},
		{"wrong RSA key", must(MintKey(otherRSA, base)), ErrInvalidToken},
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + claims + ".", ErrInvalidToken},
		{"HS256 signed with the RSA public key (alg confusion)", must(mint(hsMethod, pubPEM, base)), ErrInvalidToken},
		{"expired", must(MintHMAC(secret(0), with(func(o *MintOptions) {
			o.Now = func() time.Time { return now.Add(-2 * time.Hour) }
		}))), ErrExpired},
		{"not yet valid", must(MintHMAC(secret(0), with(func(o *MintOptions) { o.NotBefore = now.Add(time.Hour) }))), ErrNotYetValid},
		{"wrong audience", must(MintHMAC(secret(0), with(func(o *MintOptions) { o.Audience = "other" }))), ErrInvalidToken},
		{"no audience", must(MintHMAC(secret(0), with(func(o *MintOptions) { o.Audience = "" }))), ErrInvalidToken},
		{"wrong issuer", must(MintHMAC(secret(0), with(func(o *MintOptions) { o.Issuer = "mallory" }))), ErrInvalidToken},
		{"no exp", noExp(t, secret(0)), ErrInvalidToken},
		{"bad scope claim", badScopes(t, secret(0), now), ErrInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("good HMAC and RSA tokens pass", func(t *testing.T) {
		for _, tok := range []string{good, must(MintKey(rsaKey, base))} {
			if _, err := v.Verify(context.Background(), tok); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("leeway", func(t *testing.T) {
		tok := must(MintHMAC(secret(0), with(func(o *MintOptions) {
			o.Now = func() time.Time { return now.Add(-time.Hour - DefaultLeeway/2) }
		})))
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("token expired within the leeway: %v", err)
		}
	})
}

func TestPublicKeyKinds(t *testing.T) {
	ec := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	_, edPriv := must2(ed25519.GenerateKey(rand.Reader))
	for _, k := range []crypto.Signer{ec, edPriv} {
		der := must(x509.MarshalPKIXPublicKey(k.Public()))
		keys := must(ParsePublicKeysPEM(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
		v := mustVerifier(t, Config{PublicKeys: keys})
		if _, err := v.Verify(context.Background(), must(MintKey(k, MintOptions{TTL: time.Minute}))); err != nil {
			t.Fatalf("%T: %v", k, err)
		}
		if _, err := v.Verify(context.Background(), must(MintHMAC(secret(0), MintOptions{TTL: time.Minute}))); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("HMAC token accepted by a public-key-only verifier: %v", err)
		}
	}
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func TestJWKS(t *testing.T) {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	rogue := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	store := jwkset.NewMemoryStorage()
	jwk := must(jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1"}}))
	if err := store.KeyWrite(context.Background(), jwk); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := store.JSONPublic(r.Context())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	v := mustVerifier(t, Config{JWKSURL: srv.URL})
	if _, err := v.Verify(context.Background(), must(MintKey(key, MintOptions{TTL: time.Minute, KeyID: "k1"}))); err != nil {
		t.Fatalf("JWKS key: %v", err)
	}
	for name, tok := range map[string]string{
		"rogue key, known kid":   must(MintKey(rogue, MintOptions{TTL: time.Minute, KeyID: "k1"})),
		"rogue key, unknown kid": must(MintKey(rogue, MintOptions{TTL: time.Minute, KeyID: "k2"})),
		"HMAC against a JWKS":    must(MintHMAC(secret(0), MintOptions{TTL: time.Minute})),
	} {
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Verify = %v, want ErrInvalidToken", name, err)
		}
	}
	v.Close()
	srv.Close()
}

func TestGrant(t *testing.T) {
	eu, _ := proto.ParseScope("region.eu")
	us, _ := proto.ParseScope("region.us")
	v := mustVerifier(t, Config{HMACSecret: secret(0)})
	for _, tc := range []struct {
		scopes   []string
		eu, us   bool
		cluster  bool
		describe string
	}{
		{nil, true, true, true, "*"},
		{[]string{"region.eu"}, true, false, false, "region.eu"},
		{[]string{"*"}, true, true, true, "*"},
		{[]string{}, false, false, false, "no scopes"},
		{[]string{"cluster", "region.us"}, false, true, true, "cluster, region.us"},
	} {
		g, err := v.Verify(context.Background(), must(MintHMAC(secret(0), MintOptions{TTL: time.Minute, Scopes: tc.scopes})))
		if err != nil {
			t.Fatal(err)
		}
		if g.Allows(eu) != tc.eu || g.Allows(us) != tc.us || g.Allows(proto.ClusterScope()) != tc.cluster || g.String() != tc.describe {
			t.Errorf("scopes %q: grant %v allows eu=%v us=%v cluster=%v", tc.scopes, g, g.Allows(eu), g.Allows(us), g.Allows(proto.ClusterScope()))
		}
	}
}

func TestExtract(t *testing.T) {
	for _, tc := range []struct {
		name       string
		auth       []string
		query      string
		protos     []string
		tok, proto string
		err        error
	}{
		{name: "none", query: "region=eu"},
		{name: "header", auth: []string{"Bearer abc"}, tok: "abc"},
		{name: "header lower-case scheme", auth: []string{"bearer abc"}, tok: "abc"},
		{name: "query", query: "region=eu&token=abc", tok: "abc"},
		{name: "protocol", protos: []string{"kairos, bearer.abc"}, tok: "abc", proto: "bearer.abc"},
		{name: "basic auth", auth: []string{"Basic abc"}, err: ErrInvalidToken},
		{name: "two headers", auth: []string{"Bearer a", "Bearer b"}, err: ErrAmbiguous},
		{name: "header and query", auth: []string{"Bearer a"}, query: "token=a", err: ErrAmbiguous},
		{name: "two query tokens", query: "token=a&token=b", err: ErrAmbiguous},
		{name: "two protocols", protos: []string{"bearer.a", "bearer.b"}, err: ErrAmbiguous},
		{name: "empty query token", query: "token=", err: ErrInvalidToken},
		{name: "huge token", query: "token=" + strings.Repeat("a", maxTokenBytes+1), err: ErrInvalidToken},
		{name: "bad escaping", query: "token=%zz", err: ErrInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Extract(tc.auth, tc.query, tc.protos)
			if !errors.Is(err, tc.err) || p.Token != tc.tok || p.Protocol != tc.proto {
				t.Fatalf("Extract = %+v, %v; want token %q protocol %q err %v", p, err, tc.tok, tc.proto, tc.err)
			}
		})
	}
}

func FuzzExtract(f *testing.F) {
	f.Add("Bearer abc", "token=x&region=eu", "bearer.abc, kairos")
	f.Add("", "token=%zz", "bearer.")
	f.Fuzz(func(t *testing.T, auth, query, protos string) {
		var a []string
		if auth != "" {
			a = []string{auth}
		}
		p, err := Extract(a, query, []string{protos})
		if err == nil && len(p.Token) > maxTokenBytes {
			t.Fatalf("token of %d bytes accepted", len(p.Token))
		}
		if p.Protocol != "" && !strings.HasSuffix(p.Protocol, p.Token) {
			t.Fatalf("protocol %q does not carry token %q", p.Protocol, p.Token)
		}
	})
}

func FuzzVerify(f *testing.F) {
	good := must(MintHMAC(secret(0), MintOptions{TTL: time.Hour, Scopes: []string{"region.eu"}}))
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(good[:len(good)-3])
	v, err := NewVerifier(context.Background(), Config{HMACSecret: secret(0)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := v.Verify(context.Background(), tok)
		if err != nil && !errors.Is(err, ErrInvalidToken) && !errors.Is(err, ErrExpired) &&
			!errors.Is(err, ErrNotYetValid) && !errors.Is(err, ErrNoToken) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if err == nil && tok != good {
			// Only a token signed with the secret passes; a fuzzer cannot forge one.
			t.Fatalf("forged token accepted: %q", tok)
		}
	})
}

func noExp(t *testing.T, key []byte) string {
	t.Helper()
	return signRaw(t, key, `{"aud":"meridian","iss":"ops"}`)
}

func badScopes(t *testing.T, key []byte, now time.Time) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"aud": "meridian", "iss": "ops", "exp": now.Add(time.Hour).Unix(), "scopes": []string{"region.eu", "region..x"}})
	return signRaw(t, key, string(b))
}
