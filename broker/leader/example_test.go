package leader_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsnode"
)

// One elector on an embedded NATS server: it takes the free lease, and
// Resign hands it back at once.
func ExampleElector() {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir, _ := os.MkdirTemp("", "leader-example")
	defer os.RemoveAll(dir)
	node, _ := natsnode.New(natsnode.Config{Port: -1, StoreDir: dir, Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer node.Shutdown(context.Background())
	nc, _ := nats.Connect(node.ClientURL())
	defer nc.Close()
	js, _ := jetstream.New(nc)

	changes := make(chan bool, 2)
	e, _ := leader.New(leader.Config{
		JS: js, Key: "reports", ID: "node-a", TTL: time.Second, Logger: quiet,
		OnChange: func(leading bool) { changes <- leading },
	})
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	fmt.Println("leading:", <-changes, e.Leading())
	if err := e.Resign(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("after resign:", <-changes, e.Leading(), <-done)
	// Output:
	// leading: true true
	// after resign: false false <nil>
}
