//go:build linux

package natsauth_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/edge"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// TestRolesWorkWithTheirOwnPermissions runs a real aggregator (elected, so
// it keeps its lease and state buckets and both streams) and a real edge,
// each with its own identity, fed by a gateway identity: snapshots reach the
// edge, the edge reads history from JetStream, and no role is refused
// anything. Least privilege that breaks a role would show here.
func TestRolesWorkWithTheirOwnPermissions(t *testing.T) {
	n, dir := secureNode(t, false)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	aggC := mustDial(t, n, dir, "aggregator")
	edgeC := mustDial(t, n, dir, "edge")
	gw := mustDial(t, n, dir, "gateway.us.gw-1")

	a, err := aggregator.New(aggregator.Config{NATS: aggC.Conn, Logger: quiet, ID: "agg-1"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{NATS: edgeC.Conn, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		_ = e.Shutdown(sctx)
		_ = a.Shutdown(sctx)
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	}()

	js, err := jetstream.New(edgeC.Conn)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	cadence := time.NewTicker(200 * time.Millisecond) // one report per tick, as a gateway would
	defer cadence.Stop()
	var seq uint64
	for {
		seq++
		if err := gw.Publish(proto.ReportSubject("us", "gw-1"), testReport("us", "gw-1", seq, 7)); err != nil {
			t.Fatal(err)
		}
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		snaps, err := history.Load(lctx, js, proto.ClusterScope(), time.Now().Add(-time.Minute), 100)
		lcancel()
		if err == nil && len(snaps) > 0 && snaps[len(snaps)-1].RequestsTotal == 7 && edgeReady(e) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster snapshot of 7 requests read by the edge identity (ready %v): %v, %d snapshots", edgeReady(e), err, len(snaps))
		}
		<-cadence.C
	}
	// The edge's interest announcements reach the aggregators.
	interest, err := aggC.SubscribeSync(proto.InterestSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := aggC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := edgeC.Publish(proto.InterestSubject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := interest.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("interest announcement from the edge identity: %v", err)
	}
	for _, c := range []*client{aggC, edgeC, gw} {
		select {
		case err := <-c.errs:
			t.Errorf("a role was refused something it needs: %v", err)
		default:
		}
	}
}

func edgeReady(e *edge.Edge) bool {
	_, ok := e.Ready()
	return ok
}
