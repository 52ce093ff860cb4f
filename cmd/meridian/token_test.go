package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

func TestTokenMintsWhatTheEdgeVerifies(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	secret := strings.Repeat("s", 40)
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		cfg  auth.Config
	}{
		{[]string{"--hmac-secret-file", secretFile}, auth.Config{HMACSecret: []byte(secret)}},
		{[]string{"--private-key-file", keyFile}, auth.Config{PublicKeys: []crypto.PublicKey{&key.PublicKey}}},
	} {
		var out, errOut bytes.Buffer
		args := append([]string{"meridian", "token", "--scopes", "region.eu", "--aud", "meridian", "--ttl", "5m"}, tc.args...)
		if code := run(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		tc.cfg.Audience = "meridian"
		v, err := auth.NewVerifier(context.Background(), tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		g, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
		v.Close()
		if err != nil {
			t.Fatalf("%v: minted token does not verify: %v", tc.args, err)
		}
		if !g.Allows(proto.RegionScope("eu")) || g.Allows(proto.RegionScope("us")) {
			t.Errorf("%v: grant %v", tc.args, g)
		}
	}
}

func TestEdgeRefusesToStartWithoutAuth(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0"}, "no client authentication configured"},
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0", "--auth-hmac-secret-file", "/nonexistent"}, "--auth-hmac-secret-file"},
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0", "--allowed-origins", "evil"}, "allowed origin"},
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0", "--max-conns-per-addr", "-1", "--anonymous"}, "MaxConnsPerAddr -1 must not be negative"},
		{[]string{"meridian", "token", "--ttl", "1h"}, "exactly one of"},
		{[]string{"meridian", "edge", "--listen", "127.0.0.1:0", "--anonymous", "--trusted-proxies", "nginx"}, "--trusted-proxies"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args[1:], code, errOut.String(), tc.want)
		}
	}
}

func TestEdgeSecretsKeepsThenRotates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	gen := func(args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"meridian", "edge-secrets", "--out", dir, "--host", "edge-1"}, args...), &out, &errOut); code != 0 {
			t.Fatalf("edge-secrets %v: exit %d: %s", args, code, errOut.String())
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gen()
	cert, secret := read(edgeCertFile), read(edgeSecretFile)
	if fi, err := os.Stat(filepath.Join(dir, edgeSecretFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v (%v), want 0600", fi.Mode(), err)
	}
	if len(strings.TrimSpace(secret)) < 32 {
		t.Fatalf("secret of %d bytes", len(secret))
	}
	gen()
	if read(edgeCertFile) != cert || read(edgeSecretFile) != secret {
		t.Fatal("a second run replaced the secrets")
	}
	gen("--rotate")
	if read(edgeCertFile) == cert || read(edgeSecretFile) == secret {
		t.Fatal("--rotate kept the secrets")
	}
}
