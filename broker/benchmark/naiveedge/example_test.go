package naiveedge_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/meridian-metrics/meridian/broker/benchmark/naiveedge"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/proto"
)

// A naive edge serves the snapshots published on NATS; a client gets one
// Snapshot right after connecting.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	node, _ := natsnode.New(natsnode.Config{DontListen: true, DisableJetStream: true, Logger: slog.New(slog.DiscardHandler)})
	if err := node.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer node.Shutdown(ctx)
	nc, _ := node.Connect()
	defer nc.Close()

	srv, err := naiveedge.New(naiveedge.Config{NATS: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		_ = srv.Shutdown(ctx)
		<-done
	}()

	snap := proto.Snapshot{
		Version: proto.SnapshotVersion, Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		RequestsTotal: 10, RequestsSuccess: 9, RequestsError: 1, SuccessRate: 90,
	}
	data, _ := snap.Encode()
	_ = nc.Publish(proto.SnapshotSubject(proto.ClusterScope()), data)
	for !srv.HasSnapshot() {
		time.Sleep(time.Millisecond)
	}

	c, err := wsclient.Dial(ctx, "ws://"+srv.Addr().String()+naiveedge.Path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ev, err := c.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Type, ev.Timestamp.Format(time.RFC3339), ev.Values["requests_total"], ev.Values["success_rate"])
	// Output: Snapshot 2025-01-02T03:04:05Z 10 90
}
