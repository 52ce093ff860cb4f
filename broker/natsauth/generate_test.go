package natsauth_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-metrics/meridian/broker/natsauth"
)

func TestGenerateKeepsThenRotates(t *testing.T) {
	dir := t.TempDir()
	spec := natsauth.Spec{Dir: dir, Gateways: []natsauth.Gateway{{Region: "eu", Instance: "gw-1"}}}
	res, err := natsauth.Generate(spec)
	if err != nil || res.Kept {
		t.Fatalf("first run: %+v %v", res, err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, secret := range []string{natsauth.CAKeyFile, natsauth.ServerKeyFile, "edge.nk", "gateway.eu.gw-1.nk"} {
		fi, err := os.Stat(filepath.Join(dir, secret))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", secret, err, fi.Mode().Perm())
		}
	}
	ca, seed, conf := read(natsauth.CAFile), read("edge.nk"), read(natsauth.AuthConfigFile)
	if bytes.Contains(conf, []byte("SU")) && strings.Contains(string(conf), strings.TrimSpace(string(seed))) {
		t.Fatal("the authorization config holds a seed")
	}
	// A second start-up keeps everything.
	if res, err := natsauth.Generate(spec); err != nil || !res.Kept || !bytes.Equal(read("edge.nk"), seed) {
		t.Fatalf("second run: %+v %v; seed changed %v", res, err, !bytes.Equal(read("edge.nk"), seed))
	}
	// Rotation: same CA, new seed, and the config still lists the old key.
	spec.Rotate = true
	if _, err := natsauth.Generate(spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(natsauth.CAFile), ca) {
		t.Fatal("rotation replaced the CA")
	}
	if bytes.Equal(read("edge.nk"), seed) {
		t.Fatal("rotation kept the edge seed")
	}
	rotated := string(read(natsauth.AuthConfigFile))
	if strings.Count(rotated, "# edge") != 2 || !strings.Contains(rotated, "previous key") {
		t.Fatalf("rotated config does not list the previous edge key:\n%s", rotated)
	}
	// Retiring drops the previous keys and keeps the seeds.
	newSeed := read("edge.nk")
	if _, err := natsauth.Generate(natsauth.Spec{Dir: dir, Gateways: spec.Gateways, Retire: true}); err != nil {
		t.Fatal(err)
	}
	if retired := string(read(natsauth.AuthConfigFile)); strings.Count(retired, "# edge") != 1 || strings.Contains(retired, "previous key") {
		t.Fatalf("retired config still lists previous keys:\n%s", retired)
	}
	if !bytes.Equal(read("edge.nk"), newSeed) {
		t.Fatal("retiring changed a seed")
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	for name, spec := range map[string]natsauth.Spec{
		"no dir":            {},
		"negative":          {Dir: t.TempDir(), Validity: -1},
		"bad region":        {Dir: t.TempDir(), Gateways: []natsauth.Gateway{{Region: "e.u"}}},
		"wildcard instance": {Dir: t.TempDir(), Gateways: []natsauth.Gateway{{Region: "eu", Instance: ">"}}},
	} {
		if _, err := natsauth.Generate(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
