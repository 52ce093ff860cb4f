//go:build linux

package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/broker/certfile"
	"github.com/meridian-metrics/meridian/proto"
)

type tlsEdge struct {
	*testEdge
	certFile, keyFile string
	reloader          *certfile.Reloader
}

func startTLSEdge(t *testing.T, cfg Config) (*tlsEdge, *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	cert, err := certfile.WriteSelfSigned(certFile, keyFile, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := certfile.New(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = r.ServerConfig()
	te := startEdge(t, cfg)
	te.url = "wss://" + te.Addr().String() + wsPath
	return &tlsEdge{testEdge: te, certFile: certFile, keyFile: keyFile, reloader: r}, cert
}

func clientTLS(certs ...*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func TestTLSWebSocket(t *testing.T) {
	t.Parallel()
	te, cert := startTLSEdge(t, Config{})
	te.publishWait(snap(time.Now(), 10))
	c := dialWith(t, ws.Dialer{TLSConfig: clientTLS(cert)}, te.url)
	c.expectEvent(proto.EventSnapshot, 5*time.Second)
	// Input goes through the relay too.
	c.sendText(`{"interval_seconds":0}`)
	c.expectEvent(proto.EventError, 5*time.Second)
	c.sendText(`{"interval_seconds":1}`)
	te.publishWait(snap(time.Now().Add(time.Second), 20))
	ev, _ := c.expectEvent(proto.EventSnapshot, 5*time.Second)
	if ev.Values["requests_total"] != 20 {
		t.Fatalf("snapshot %v", ev.Values)
	}
	// HTTPS for plain requests.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(cert)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + te.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("https /healthz: %d %q", resp.StatusCode, body)
	}
	// Shutdown closes wss clients with 1001 like any other.
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = te.Shutdown(ctx)
	}()
	code, _ := c.expectClose(10 * time.Second)
	<-done
	if code != ws.StatusGoingAway {
		t.Fatalf("close %d, want 1001", code)
	}
}

func TestPlainWebSocketOnTLSPortRefused(t *testing.T) {
	t.Parallel()
	te, _ := startTLSEdge(t, Config{})
	c := rawDial(t, te.Addr().String())
	c.sendRaw([]byte(upgradeRequest(wsPath)))
	_, body := c.readHTTPResponse(http.StatusBadRequest)
	if body != "this port requires TLS: use https:// or wss://\n" {
		t.Errorf("body %q", body)
	}
	if rejections(te.testEdge, rejectPlaintext) != 1 {
		t.Error("plaintext not counted")
	}
}

func TestTLSCertificateRotation(t *testing.T) {
	t.Parallel()
	te, first := startTLSEdge(t, Config{})
	serial := func(roots ...*x509.Certificate) string {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", te.Addr().String(), clientTLS(roots...))
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(first); got != first.SerialNumber.String() {
		t.Fatalf("serving serial %s, want %s", got, first.SerialNumber)
	}
	// Rotate in place: write to temporary names and rename over, as
	// certificate tools do.
	dir := t.TempDir()
	tmpCert, tmpKey := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	second, err := certfile.WriteSelfSigned(tmpCert, tmpKey, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	renameOver(t, tmpKey, te.keyFile)
	renameOver(t, tmpCert, te.certFile)
	if got := serial(first, second); got != second.SerialNumber.String() {
		t.Fatalf("after rotation serving serial %s, want the new %s", got, second.SerialNumber)
	}
	if te.reloader.Loads() != 2 {
		t.Errorf("loads = %d, want 2", te.reloader.Loads())
	}
}

func renameOver(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}
