// Package natstest starts the embedded NATS servers of every test: one
// helper per kind of server, each shut down when the test ends. Tests wait
// for effects with integration/wait.
package natstest

import (
	"context"
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
	return start(t, natsnode.Config{Port: -1, StoreDir: t.TempDir()}, func(n *natsnode.Node) (*nats.Conn, error) {
		return nats.Connect(n.ClientURL())
	})
}

// StartCore starts a core NATS node without JetStream that serves
// in-process clients only, and shuts it down when the test ends. It is
// cheap enough for every test to have its own; JetStream users get an
// error from every JetStream call, as in production without JetStream. It
// returns the node and an in-process client connection (closed at cleanup).
func StartCore(t testing.TB) (*natsnode.Node, *nats.Conn) {
	t.Helper()
	return start(t, natsnode.Config{DontListen: true, DisableJetStream: true}, func(n *natsnode.Node) (*nats.Conn, error) {
		return n.Connect()
	})
}

func start(t testing.TB, cfg natsnode.Config, connect func(*natsnode.Node) (*nats.Conn, error)) (*natsnode.Node, *nats.Conn) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := natsnode.New(cfg)
	if err != nil {
		t.Fatalf("new nats node: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start nats node: %v", err)
	}
	nc, err := connect(n)
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
