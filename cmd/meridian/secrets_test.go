package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretsCommandWritesThenKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	args := []string{"meridian", "secrets", "--out", dir, "--gateway", "eu", "--gateway", "us/gw-1"}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, f := range []string{"ca.pem", "nats-server.pem", "nats-auth.conf", "aggregator.nk", "edge.nk", "operator.nk", "gateway.eu.nk", "gateway.us.gw-1.nk"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	seed, _ := os.ReadFile(filepath.Join(dir, "edge.nk"))
	errOut.Reset()
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, errOut.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "edge.nk")); !bytes.Equal(seed, again) {
		t.Fatal("a second run replaced a seed")
	}
}

func TestSecurityFlagsRejectBadValues(t *testing.T) {
	tmp := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"meridian", "secrets", "--out", tmp, "--gateway", "e.u"}, "--gateway"},
		{[]string{"meridian", "secrets", "--out", tmp, "--gateway", "eu/>"}, "--gateway"},
		{[]string{"meridian", "secrets", "--out", tmp, "--validity", "-1h"}, "--validity"},
		{[]string{"meridian", "secrets", "--out", tmp, "--rotate", "--retire-previous"}, "separate steps"},
		{[]string{"meridian", "nats", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", tmp, "--tls-verify"}, "VerifyClients"},
		{[]string{"meridian", "nats", "--listen", "127.0.0.1:0", "--metrics-listen", "", "--data-dir", tmp, "--auth-config", filepath.Join(tmp, "none.conf")}, "authorization config"},
		{[]string{"meridian", "aggregator", "--listen", "127.0.0.1:0", "--nats-url", "nats://127.0.0.1:1", "--max-instances", "-1"}, "negative"},
		{[]string{"meridian", "edge", "--anonymous", "--listen", "127.0.0.1:0", "--admin-listen", "", "--nats-nkey", filepath.Join(tmp, "none.nk")}, "--nats-nkey"},
		{[]string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a", "--nats-token", "t", "--nats-user", "u"}, "alternatives"},
		{[]string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a", "--nats-password", "p"}, "--nats-user"},
		{[]string{"meridian", "gateway", "--upstream", "http://x", "--region", "eu", "--instance", "a", "--nats-cert", "c.pem"}, "--nats-key"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args[1:], code, errOut.String(), tc.want)
		}
	}
}
