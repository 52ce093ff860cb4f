//go:build !linux

package benchmark

import (
	"bufio"
	"context"
	"encoding/json"
	"time"
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

func machineBusy() (time.Duration, error) { return 0, ErrUnsupported }
