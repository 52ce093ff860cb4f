//go:build linux

package benchmark

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNetns checks that a namespace's loopback is up and its own: a
// listener inside is reachable from inside, the host's is not, and every
// process started through it shares one namespace that is not the host's.
func TestNetns(t *testing.T) {
	ns, err := newNetns()
	if errors.Is(err, errNetnsPermission) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ns.close()

	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	err = ns.do(func() error {
		in, err := net.Listen("tcp", "127.0.0.9:0")
		if err != nil {
			return err
		}
		defer in.Close()
		c, err := net.Dial("tcp", in.Addr().String())
		if err != nil {
			return err
		}
		c.Close()
		if c, err := net.Dial("tcp", host.Addr().String()); err == nil {
			c.Close()
			return errors.New("the host's listener is reachable from the namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		var out bytes.Buffer
		cmd := exec.Command("readlink", "/proc/self/ns/net")
		cmd.Stdout = &out
		if err := ns.start(cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, strings.TrimSpace(out.String()))
	}
	if ids[0] == self || ids[0] != ids[1] || !strings.HasPrefix(ids[0], "net:[") {
		t.Errorf("children's namespaces %q, the test's %q: want one of their own", ids, self)
	}
}
