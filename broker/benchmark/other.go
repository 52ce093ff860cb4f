//go:build !linux

package benchmark

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
)

// Elsewhere than Linux the harness compiles but cannot run: the client and
// the raw loop use epoll, the measurements /proc.

func runServer(context.Context, serverSpec, *bufio.Scanner, *json.Encoder) error {
	return ErrUnsupported
}

func runClient(context.Context, clientSpec, *bufio.Scanner, *json.Encoder) error {
	return ErrUnsupported
}

func hardFileLimit() (uint64, error) { return 0, ErrUnsupported }

func raiseHardFileLimit(uint64) error { return ErrUnsupported }

func readMachineCPU() (machineCPU, error) { return machineCPU{}, ErrUnsupported }

type netns struct{}

func newNetns() (*netns, error) { return nil, ErrUnsupported }

func (*netns) start(cmd *exec.Cmd) error { return cmd.Start() }

func (*netns) close() {}
