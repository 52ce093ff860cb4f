package natstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsnode"
)

// Cluster is a NATS cluster of embedded servers with JetStream on loopback,
// each of which a test may stop and start again with its name, ports and
// store (to take JetStream's quorum away and give it back).
type Cluster struct {
	t      testing.TB
	mu     sync.Mutex
	names  []string
	client []int
	route  []int
	dirs   []string
	nodes  []*natsnode.Node
}

// StartCluster starts n servers in one cluster and stops them when the test
// ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := NewCluster(t, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = c.Start(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// NewCluster prepares n servers of one cluster (names, ports, stores)
// without starting any, for tests that start them in their own order with
// Start; every server started is stopped when the test ends.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, nodes: make([]*natsnode.Node, n)}
	for i := range n {
		c.names = append(c.names, fmt.Sprintf("n%d", i+1))
		c.client = append(c.client, freePort(t))
		c.route = append(c.route, freePort(t))
		c.dirs = append(c.dirs, t.TempDir())
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Stop(i)
		}
	})
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// URL is server i's client URL.
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.client[i]) }

// Start starts server i (again).
func (c *Cluster) Start(i int) error {
	var routes []string
	for j := range c.route {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", c.route[j]))
		}
	}
	n, err := natsnode.New(natsnode.Config{
		Name: c.names[i], Port: c.client[i], StoreDir: c.dirs[i],
		ClusterName: "test-cluster", ClusterPort: c.route[i], Routes: routes,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return nil
}

// Stop shuts server i down; stopping a stopped server does nothing.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

// Node is server i, nil while it is stopped.
func (c *Cluster) Node(i int) *natsnode.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}
