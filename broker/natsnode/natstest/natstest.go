// Package natstest starts embedded NATS servers for tests.
package natstest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode"
)

// StartTest starts a JetStream-enabled node on a random loopback port with
// its store in t.TempDir(), and shuts it down when the test ends. It returns
// the node and a client connection (closed at cleanup too).
func StartTest(t testing.TB) (*natsnode.Node, *nats.Conn) {
	t.Helper()
	n, err := natsnode.New(natsnode.Config{
		Port:     -1,
		StoreDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("new nats node: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start nats node: %v", err)
	}
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		n.Shutdown(context.Background())
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return n, nc
}
