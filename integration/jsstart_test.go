package integration

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// startBound is how long after the JetStream meta leader exists the roles
// must be ready and the history stream answer: an attempt nobody answered
// (3 s), the retry (1 s) and the stream's own election, with room for a
// loaded machine. Before the fix the ensure loop's backoff had grown to 16
// or 30 s by then.
const startBound = 10 * time.Second

// TestRolesStartWithAFormingJetStreamCluster starts aggregators (R3
// streams, lease and state buckets) and an edge while their three-node
// JetStream cluster is still forming, in several orders, and checks that
// within startBound of the cluster's meta leader every aggregator is Ready,
// the edge is Ready and the history stream answers with a leader and keeps
// the cluster snapshots.
func TestRolesStartWithAFormingJetStreamCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three-node JetStream clusters")
	}
	for _, tc := range []struct {
		name string
		// nodes starts the cluster's nodes; roles connect to role[i].
		nodes func(t *testing.T, c *natstest.Cluster)
		roles [3]int // the nodes of aggregator 1, aggregator 2, edge
	}{
		// docker-compose: every process at once, the roles retrying their
		// connection until their node listens.
		{"together", func(t *testing.T, c *natstest.Cluster) { startNodes(t, c, 0, 0, 1, 2) }, [3]int{0, 1, 2}},
		// One node first and long alone (its JetStream answers "temporarily
		// unavailable" after a while), so that ensure attempts fail for
		// long before the others join.
		{"one node long first", func(t *testing.T, c *natstest.Cluster) {
			startNodes(t, c, 0, 0)
			startNodes(t, c, 26*time.Second, 1, 2)
		}, [3]int{0, 0, 0}},
		// Two nodes elect at once; the roles' node joins later.
		{"roles on the last node", func(t *testing.T, c *natstest.Cluster) {
			startNodes(t, c, 0, 0, 1)
			startNodes(t, c, 3*time.Second, 2)
		}, [3]int{2, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := natstest.NewCluster(t, 3)
			logs := []*logRecorder{{}, {}}
			aggs := []*aggregator.Aggregator{
				startFormingAgg(t, c.URL(tc.roles[0]), "agg-1", logs[0]),
				startFormingAgg(t, c.URL(tc.roles[1]), "agg-2", logs[1]),
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			e, err := edge.New(edge.Config{Listener: ln, NATS: retryConnect(t, c.URL(tc.roles[2])), Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			runUntilCleanup(t, "edge", e.Run, e.Shutdown)
			tc.nodes(t, c)

			wait.For(t, 60*time.Second, "a JetStream meta leader", func() bool { return metaLeader(c) != "" })
			elected := time.Now()
			js, err := jetstream.New(retryConnect(t, c.URL(tc.roles[0])))
			if err != nil {
				t.Fatal(err)
			}
			var why string
			if err := wait.Until(context.Background(), startBound, func() bool {
				why = rolesMissing(js, aggs, e)
				return why == ""
			}); err != nil {
				for _, l := range logs {
					for _, m := range l.all() {
						t.Log(m)
					}
				}
				t.Fatalf("%v after the meta leader: %s", startBound, why)
			}
			t.Logf("ready %v after the meta leader", time.Since(elected).Round(time.Millisecond))
			// History is kept: a cluster snapshot is stored once ready.
			wait.For(t, 5*time.Second, "a cluster snapshot in the history stream", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				s, err := js.Stream(ctx, proto.HistoryStream)
				if err != nil {
					return false
				}
				_, err = s.GetLastMsgForSubject(ctx, proto.SnapshotSubject(proto.ClusterScope()))
				return err == nil
			})
		})
	}
}

// rolesMissing says what is not yet ready ("" when all is).
func rolesMissing(js jetstream.JetStream, aggs []*aggregator.Aggregator, e *edge.Edge) (missing string) {
	defer func() {
		if missing != "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, name := range []string{proto.HistoryStream, proto.RollupStream} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				missing = name + ": " + err.Error()
				return
			}
			if info := s.CachedInfo(); info.Cluster == nil || info.Cluster.Leader == "" {
				missing = name + ": " + history.ErrNoLeader.Error()
				return
			}
		}
	}()
	for _, a := range aggs {
		if why, ok := a.Ready(); !ok {
			return a.ID() + ": " + why
		}
	}
	if why, ok := e.Ready(); !ok {
		return "edge: " + why
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, name := range []string{proto.HistoryStream, proto.RollupStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return name + ": " + err.Error()
		}
		if info := s.CachedInfo(); info.Cluster == nil || info.Cluster.Leader == "" {
			return name + ": " + history.ErrNoLeader.Error()
		}
	}
	return ""
}

// startNodes starts the nodes after delay, in the background; the test
// waits for them before it ends.
func startNodes(t *testing.T, c *natstest.Cluster, delay time.Duration, nodes ...int) {
	done := make(chan error, len(nodes))
	go func() {
		time.Sleep(delay) // the start order under test, not synchronisation
		for _, i := range nodes {
			go func() { done <- c.Start(i) }()
		}
	}()
	t.Cleanup(func() {
		for range nodes {
			if err := <-done; err != nil {
				t.Errorf("start node: %v", err)
			}
		}
	})
}

// retryConnect connects to url, retrying in the background until it
// listens, and closes the connection when the test ends.
func retryConnect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startFormingAgg(t *testing.T, url, id string, logs *logRecorder) *aggregator.Aggregator {
	t.Helper()
	a, err := aggregator.New(aggregator.Config{
		NATS: retryConnect(t, url), Logger: slog.New(logs), ID: id, StateReplicas: 3,
		History: history.StreamConfig{Replicas: 3}, Rollups: history.StreamConfig{Replicas: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, id, a.Run, func(context.Context) error { return nil })
	return a
}

// metaLeader is the JetStream meta leader a running node knows, "" while
// none is elected.
func metaLeader(c *natstest.Cluster) string {
	for i := range 3 {
		n := c.Node(i)
		if n == nil {
			continue
		}
		if jsz, err := n.Server().Jsz(&server.JSzOptions{}); err == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
			return jsz.Meta.Leader
		}
	}
	return ""
}
