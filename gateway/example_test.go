package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/proto"
)

// Middleware meters any handler: here three requests, one of them a 404.
func ExampleMiddleware() {
	var rec gateway.Recorder
	h := gateway.Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "hello\n")
	}))
	for _, path := range []string{"/", "/a", "/missing"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	c := rec.Counters()
	fmt.Printf("total %d, success %d, error %d, in flight %d\n",
		c.RequestsTotal, c.RequestsSuccess, c.RequestsError, c.ActiveConnections)
	// Output: total 3, success 2, error 1, in flight 0
}

// A Recorder can be driven directly, e.g. by a collector that sees requests
// some other way.
func ExampleRecorder() {
	var rec gateway.Recorder
	rec.Begin()
	rec.Begin()
	rec.End(200, 3*time.Millisecond)
	c := rec.Counters()
	fmt.Println("total", c.RequestsTotal, "in flight", c.ActiveConnections,
		"in the 5ms bucket", c.LatencyBuckets[proto.LatencyBucket(3*time.Millisecond)])
	// Output: total 1 in flight 1 in the 5ms bucket 1
}

// A Node proxies to its upstream and publishes reports; its final report,
// published by Shutdown, carries the exact totals.
func ExampleNode() {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ns, _ := natsnode.New(natsnode.Config{Port: -1, DisableJetStream: true, Logger: quiet})
	ns.Start(context.Background())
	defer ns.Shutdown(context.Background())
	nc, _ := nats.Connect(ns.ClientURL())
	defer nc.Close()
	reports, _ := nc.SubscribeSync(proto.ReportSubject("eu", "gw-1"))
	nc.Flush()

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from upstream\n")
	}))
	defer upstream.Close()
	u, _ := url.Parse(upstream.URL)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	node, err := gateway.New(gateway.Config{
		Upstream: u, Listener: ln, Region: "eu", Instance: "gw-1", NATS: nc, Logger: quiet,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// New opened the listener: requests queue until Run serves them.
	go node.Run(context.Background())

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, _ := client.Get("http://" + node.Addr().String() + "/")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, ": ", string(body))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Shutdown(ctx)
	for {
		msg, err := reports.NextMsg(5 * time.Second)
		if err != nil {
			fmt.Println(err)
			return
		}
		if r, _ := proto.DecodeReport(msg.Data); r.Final {
			fmt.Println("final report: requests", r.RequestsTotal, "errors", r.RequestsError)
			break
		}
	}
	// Output:
	// 200 OK: hello from upstream
	// final report: requests 1 errors 0
}
