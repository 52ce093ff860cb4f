package natsauth_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsauth"
)

// Rotation without a restart: after --rotate and a reload both the old and
// the new key connect; after --retire-previous and a reload only the new.
func TestRotationReloadsWithoutRestart(t *testing.T) {
	n, dir := secureNode(t, false)
	old := filepath.Join(t.TempDir(), "old.nk")
	seed, err := os.ReadFile(filepath.Join(dir, "edge.nk"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	connect := func(seedFile string) error {
		o, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(n.ClientURL(), o, nats.RootCAs(filepath.Join(dir, natsauth.CAFile)))
		if err == nil {
			nc.Close()
		}
		return err
	}
	gws := []natsauth.Gateway{{Region: "us", Instance: "gw-1"}, {Region: "eu"}}
	if _, err := natsauth.Generate(natsauth.Spec{Dir: dir, ClientCerts: true, Gateways: gws, Rotate: true}); err != nil {
		t.Fatal(err)
	}
	if err := connect(filepath.Join(dir, "edge.nk")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("new key before the reload: %v, want refused", err)
	}
	if err := n.ReloadSecurity(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{old, filepath.Join(dir, "edge.nk")} {
		if err := connect(s); err != nil {
			t.Fatalf("after rotation and reload, %s: %v", filepath.Base(s), err)
		}
	}
	if _, err := natsauth.Generate(natsauth.Spec{Dir: dir, Gateways: gws, Retire: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadSecurity(); err != nil {
		t.Fatal(err)
	}
	if err := connect(old); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("retired key after the reload: %v, want refused", err)
	}
	if err := connect(filepath.Join(dir, "edge.nk")); err != nil {
		t.Fatalf("current key after retiring: %v", err)
	}
}
