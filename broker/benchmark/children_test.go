//go:build linux

package benchmark

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/integration/wait"
)

func TestChildErrorsReachTheHarness(t *testing.T) {
	tests := []struct {
		name string
		spec childSpec
		want string
	}{
		{"role without settings", childSpec{Role: roleServer}, "without its settings"},
		{"unknown mode", childSpec{Role: roleServer, Server: &serverSpec{Mode: "fast"}}, `server mode "fast"`},
		{"no server to connect to", childSpec{Role: roleClient, Client: &clientSpec{
			Addr: "127.0.0.1:1", Subscribers: 2, Sources: 1, ConnectRate: 100, Intervals: IntervalsOne,
		}}, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := startChild("test child", testChild, (*exec.Cmd).Start, nil, tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer c.stop()
			var m message
			if tt.spec.Role == roleClient {
				m, err = c.call(context.Background(), command{Cmd: cmdConnect, Subscribers: 2}, evConnected, 30*time.Second)
			} else {
				m, err = c.recv(context.Background(), evReady, 30*time.Second)
			}
			if tt.spec.Role == roleClient && err == nil {
				// The client reports its failures in the summary.
				if m.Connected.Failed != 2 || !strings.Contains(m.Connected.FirstError, tt.want) {
					t.Fatalf("connected %+v, want 2 failures mentioning %q", m.Connected, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrChildFailed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("recv: %v, want ErrChildFailed mentioning %q", err, tt.want)
			}
		})
	}
}

// TestStopKillsAStubbornChild: a child that ignores its closed stdin is
// killed with its whole process group once the grace period is over.
func TestStopKillsAStubbornChild(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	// The shell starts a grandchild in the same group; both must go.
	c, err := startChild("stubborn", func() *exec.Cmd {
		return exec.Command(sh, "-c", "sleep 300 & sleep 300; wait")
	}, (*exec.Cmd).Start, nil, childSpec{Role: roleServer})
	if err != nil {
		t.Fatal(err)
	}
	c.grace = 200 * time.Millisecond
	start := time.Now()
	c.stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stop took %s", took)
	}
	if c.cmd.ProcessState == nil {
		t.Fatal("child not reaped")
	}
	if ws := c.cmd.ProcessState.String(); !strings.Contains(ws, "killed") {
		t.Errorf("child ended with %q, want killed", ws)
	}
	assertNoChildren(t)
	// The grandchild went with the group (it was reparented, so only the
	// group tells).
	wait.For(t, 5*time.Second, "the child's process group to end", func() bool {
		return syscall.Kill(-c.cmd.Process.Pid, 0) != nil
	})
	c.stop() // idempotent
}
