package certfile

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReloadKeepsServingThroughABadRotation(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first, err := WriteSelfSigned(certFile, keyFile, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		c, err := r.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	if serial() != first.SerialNumber.String() {
		t.Fatal("not serving the first certificate")
	}
	// Half a rotation: a truncated certificate. The old one stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if serial() != first.SerialNumber.String() || r.Loads() != 1 {
		t.Fatal("a broken rotation replaced the certificate")
	}
	second, err := WriteSelfSigned(certFile, keyFile, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if serial() != second.SerialNumber.String() || r.Loads() != 2 {
		t.Fatalf("rotation not picked up (loads %d)", r.Loads())
	}
	if _, err := New(filepath.Join(dir, "missing"), keyFile, nil); err == nil {
		t.Fatal("missing certificate accepted")
	}
}
