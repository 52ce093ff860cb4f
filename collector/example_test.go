package collector_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/collector"
	"github.com/meridian-metrics/meridian/proto"
)

// A collector beside a third-party gateway: Source turns whatever the gateway
// exposes into proto.Counters; Run publishes them every Interval and Flush
// publishes the final report.
func Example() {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, _ := natsnode.New(natsnode.Config{Port: -1, DisableJetStream: true, Logger: quiet})
	ns.Start(context.Background())
	defer ns.Shutdown(context.Background())
	nc, _ := nats.Connect(ns.ClientURL())
	defer nc.Close()
	sub, _ := nc.SubscribeSync(proto.ReportSubject("eu", "nginx-1"))
	nc.Flush()

	counters := proto.Counters{
		RequestsTotal: 10, RequestsSuccess: 9, RequestsError: 1,
		DurationSumNanos: 120e6, DurationCount: 10,
		LatencyBuckets: make([]uint64, proto.NumLatencyBuckets),
	}
	counters.LatencyBuckets[proto.LatencyBucket(12*time.Millisecond)] = 10
	p, err := collector.New(collector.Config{
		NATS: nc, Region: "eu", Instance: "nginx-1", Logger: quiet,
		Interval: time.Minute, // the example flushes long before a second tick
		Source:   func() proto.Counters { return counters },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()

	for {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			fmt.Println(err)
			break
		}
		r, _ := proto.DecodeReport(msg.Data)
		fmt.Printf("%s seq=%d final=%v total=%d errors=%d\n", msg.Subject, r.Seq, r.Final, r.RequestsTotal, r.RequestsError)
		if r.Final {
			break
		}
		p.Flush(ctx) // after the first report: publish the final one
	}
	cancel()
	<-done
	// Output:
	// meridian.report.eu.nginx-1 seq=1 final=false total=10 errors=1
	// meridian.report.eu.nginx-1 seq=2 final=true total=10 errors=1
}
