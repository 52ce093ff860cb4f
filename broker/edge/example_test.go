//go:build linux

package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/proto"
)

// An edge serving one client: the client receives the latest cluster
// snapshot right after connecting.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	node, err := natsnode.New(natsnode.Config{DontListen: true, DisableJetStream: true, Logger: quiet})
	if err != nil {
		panic(err)
	}
	if err := node.Start(ctx); err != nil {
		panic(err)
	}
	defer node.Shutdown(ctx)
	nc, err := node.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	e, err := edge.New(edge.Config{NATS: nc, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	// What the aggregator publishes every second.
	s := proto.Snapshot{
		Version: proto.SnapshotVersion, Time: time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC),
		RequestsTotal: 1547, RequestsSuccess: 1520, RequestsError: 27,
		ActiveConnections: 15, AvgResponseTimeMs: 45.2, SuccessRate: 98.25,
	}
	data, _ := s.Encode()
	for _, ok := e.Ready(); !ok; _, ok = e.Ready() {
		_ = nc.Publish(proto.SnapshotSubject(proto.ClusterScope()), data)
		time.Sleep(10 * time.Millisecond)
	}

	conn, br, _, err := ws.Dial(ctx, "ws://"+e.Addr().String()+"/ws/metrics")
	if err != nil {
		panic(err)
	}
	r := io.Reader(conn)
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	msg, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, conn})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg))

	conn.Close()
	if err := e.Shutdown(ctx); err != nil {
		panic(err)
	}
	<-done
	// Output:
	// {"type":"Snapshot","timestamp":"2024-11-07T10:30:00Z","requests_total":1547,"requests_success":1520,"requests_error":27,"active_connections":15,"avg_response_time":45.2,"success_rate":98.25}
}

// A client that names a scope on the upgrade URL receives that scope's
// snapshots: here region eu, published alongside the cluster's.
func Example_regionScope() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	node, err := natsnode.New(natsnode.Config{DontListen: true, DisableJetStream: true, Logger: quiet})
	if err != nil {
		panic(err)
	}
	if err := node.Start(ctx); err != nil {
		panic(err)
	}
	defer node.Shutdown(ctx)
	nc, err := node.Connect()
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	e, err := edge.New(edge.Config{NATS: nc, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	at := time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC)
	cluster := proto.Snapshot{Version: proto.SnapshotVersion, Time: at,
		RequestsTotal: 1547, RequestsSuccess: 1520, RequestsError: 27, SuccessRate: 98.25}
	eu := proto.Snapshot{Version: proto.SnapshotVersion, Scope: proto.RegionScope("eu"), Time: at,
		RequestsTotal: 600, RequestsSuccess: 594, RequestsError: 6, SuccessRate: 99}
	publish := func(s proto.Snapshot) {
		data, _ := s.Encode()
		_ = nc.Publish(proto.SnapshotSubject(s.Scope), data)
	}
	for _, ok := e.Ready(); !ok; _, ok = e.Ready() {
		publish(cluster)
		time.Sleep(10 * time.Millisecond)
	}
	// A region the edge has not seen yet is refused (404, with the known
	// scopes): a client retries until the region's first snapshot arrived.
	var conn net.Conn
	var br *bufio.Reader
	for {
		publish(eu)
		if conn, br, _, err = ws.Dial(ctx, "ws://"+e.Addr().String()+"/ws/metrics?region=eu"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := io.Reader(conn)
	if br != nil {
		r = io.MultiReader(br, conn)
	}
	msg, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, conn})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg))

	conn.Close()
	if err := e.Shutdown(ctx); err != nil {
		panic(err)
	}
	<-done
	// Output:
	// {"type":"Snapshot","timestamp":"2024-11-07T10:30:00Z","requests_total":600,"requests_success":594,"requests_error":6,"active_connections":0,"avg_response_time":0,"success_rate":99}
}
