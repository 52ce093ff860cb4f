package integration

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/certfile"
)

// TestSecureEdgeProcess runs `meridian edge` as an operator would: TLS and
// an HMAC secret from files, a token minted by `meridian token`, read by
// `meridian watch --token @file --ca-file` over wss. Plain ws and a
// missing token are refused; /metrics is on the loopback admin listener.
func TestSecureEdgeProcess(t *testing.T) {
	bin := meridianBinary(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "edge.crt"), filepath.Join(dir, "edge.key")
	if _, err := certfile.WriteSelfSigned(certFile, keyFile, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(strings.Repeat("z", 48)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := startProc(t, nil, bin, "dev",
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--gateways", "eu=127.0.0.1:0", "--data-dir", t.TempDir(), "--demo-rps", "20")
	natsURL := dev.waitLine(30*time.Second, regexp.MustCompile(`nats\s+(nats://\S+)`))[1]

	edge := startProc(t, nil, bin, "edge", "--nats-url", natsURL, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--tls-cert", certFile, "--tls-key", keyFile, "--auth-hmac-secret-file", secretFile)
	wssURL := edge.waitLine(30*time.Second, regexp.MustCompile(`url=(wss://\S+/ws/metrics)`))[1]
	adminAddr := edge.waitLine(30*time.Second, regexp.MustCompile(`http listening.*addr=(\S+)`))[1]

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok, err := exec.CommandContext(ctx, bin, "token", "--hmac-secret-file", secretFile, "--scopes", "cluster", "--ttl", "5m").Output()
	if err != nil {
		t.Fatalf("meridian token: %v", err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, tok, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin, "watch", "--count", "2", "--token", "@"+tokenFile, "--ca-file", certFile, wssURL).CombinedOutput()
	if err != nil || strings.Count(string(out), "total=") != 2 {
		t.Fatalf("meridian watch over wss with a token: %v\n%s", err, out)
	}
	for name, args := range map[string][]string{
		"no token": {"watch", "--count", "1", "--reconnect-timeout", "1s", "--ca-file", certFile, wssURL},
		"plain ws": {"watch", "--count", "1", "--reconnect-timeout", "1s", "--token", "@" + tokenFile, strings.Replace(wssURL, "wss://", "ws://", 1)},
		"wrong CA": {"watch", "--count", "1", "--reconnect-timeout", "1s", "--token", "@" + tokenFile, wssURL},
	} {
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err == nil {
			t.Errorf("%s: watch succeeded:\n%s", name, out)
		}
	}
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin /metrics: %d", resp.StatusCode)
	}
}
