package main

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/logbuf"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// TestSlowConsumerLoggedOnceNotFlooded makes a real subscription a slow
// consumer in several episodes: one structured line per subscription and
// minute, the next naming how many episodes and drops it summarises.
func TestSlowConsumerLoggedOnceNotFlooded(t *testing.T) {
	node, _ := natstest.StartTest(t)
	var buf logbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var clockMu sync.Mutex
	clock := time.Unix(1_000_000, 0)
	now := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	nc, err := nats.Connect(node.ClientURL(), nats.ErrorHandler(newNATSErrorLog(log, now).handle))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reg := prometheus.NewRegistry()
	registerNATSClient(reg, "meridian", "edge", nc)
	gate := make(chan struct{})
	sub, err := nc.Subscribe("slow.subject", func(*nats.Msg) { <-gate })
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(2, -1); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	lines := func() int { return len(buf.Records("slow consumer")) }
	episode := func() {
		t.Helper()
		before, _ := sub.Dropped()
		for range 20 {
			if err := pub.Publish("slow.subject", []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 15*time.Second, "messages dropped", func() bool { d, _ := sub.Dropped(); return d > before })
		// Drain: the handler returns, the subscription catches up, and the
		// next overflow is a new episode.
		for {
			select {
			case gate <- struct{}{}:
				continue
			case <-time.After(200 * time.Millisecond):
			}
			if n, _, _ := sub.Pending(); n == 0 {
				return
			}
		}
	}
	for range 4 {
		episode()
	}
	wait.For(t, 15*time.Second, "the first slow-consumer line", func() bool { return lines() >= 1 })
	if n := lines(); n != 1 {
		t.Fatalf("%d slow-consumer lines for 4 episodes within a minute, want 1", n)
	}
	first := buf.Records("slow consumer")[0]
	if first["subject"] != "slow.subject" || first["level"] != "WARN" {
		t.Fatalf("line %v", first)
	}

	clockMu.Lock()
	clock = clock.Add(slowConsumerLogEvery)
	clockMu.Unlock()
	episode()
	wait.For(t, 15*time.Second, "the summary line", func() bool { return lines() == 2 })
	second := buf.Records("slow consumer")[1]
	if eps, _ := second["episodes"].(float64); eps < 2 {
		t.Fatalf("second line %v should summarise the suppressed episodes", second)
	}
	// Every episode is counted, logged or not (a burst may make more than
	// one).
	if got := counterValue(t, reg, "meridian_nats_client_slow_consumer_events_total"); got < 5 {
		t.Fatalf("slow_consumer_events_total = %v, want at least the 5 episodes", got)
	}
	close(gate)
	_ = sub.Unsubscribe()
}

// Subscriptions of one family (the edge's per-instance snapshot
// subscriptions, which share one queue and overflow together) are logged
// as one line a minute, not one per subscription.
func TestSlowConsumerLoggedOncePerFamily(t *testing.T) {
	_, nc := natstest.StartTest(t)
	var buf logbuf.Buffer
	l := newNATSErrorLog(slog.New(slog.NewJSONHandler(&buf, nil)), func() time.Time { return time.Unix(1_000_000, 0) })
	for _, subj := range []string{"meridian.snapshot.instance.gw-1", "meridian.snapshot.instance.gw-2", "meridian.snapshot.instance.gw-1", "meridian.snapshot.region.*"} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			t.Fatal(err)
		}
		l.handle(nc, sub, nats.ErrSlowConsumer)
	}
	got := buf.Records("slow consumer")
	if len(got) != 2 || got[0]["family"] != "meridian.snapshot.instance.>" || got[1]["family"] != "meridian.snapshot.region.>" {
		t.Fatalf("lines %v, want one for the instances' family and one for the regions'", got)
	}
}

// counterValue reads the registered counter name.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
