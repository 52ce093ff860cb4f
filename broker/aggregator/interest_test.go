package aggregator

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func announce(t *testing.T, nc *nats.Conn, ttl time.Duration, instances ...string) {
	t.Helper()
	in := proto.Interest{Version: proto.InterestVersion, Edge: "edge-test", Instances: instances, TTL: ttl}
	data, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(proto.InterestSubject, data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestInstanceSnapshotsOnDemand: by default an instance's snapshots are
// published only while an edge announces interest in it, while the cluster
// and regions go out every second; interest ends with its TTL, and a bad
// announcement is counted and changes nothing.
func TestInstanceSnapshotsOnDemand(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	reg := prometheus.NewRegistry()
	a := startAggregator(t, nc, reg, true)
	w := watchSnapshots(t, nc)
	report := func(seq uint64) {
		publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: seq, total: 10 * seq, active: 1})
		publishReport(t, nc, rp{inst: "gw-b", region: "eu", boot: "b", seq: seq, total: 5 * seq, active: 1})
	}
	report(1)
	// Two ticks that show both instances, with nobody interested.
	first := w.waitFor(t, "region.eu", func(s proto.Snapshot) bool { return s.RequestsTotal == 15 })
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.Time.After(first.Time) })
	if w.count["instance.gw-a"]+w.count["instance.gw-b"] != 0 {
		t.Fatalf("instance snapshots published without interest: %v", w.count)
	}

	if err := nc.Publish(proto.InterestSubject, []byte(`{"v":1,"edge":"e","instances":["a.b"],"ttl_ns":1000000000}`)); err != nil {
		t.Fatal(err)
	}
	announce(t, nc, 2*time.Second, "gw-a")
	report(2)
	w.waitFor(t, "instance.gw-a", func(s proto.Snapshot) bool { return s.RequestsTotal == 20 })
	if got := testutil.ToFloat64(a.interestBad); got != 1 {
		t.Errorf("interest decode errors = %v, want 1", got)
	}
	if w.count["instance.gw-b"] != 0 {
		t.Fatalf("gw-b published though only gw-a is followed: %v", w.count)
	}

	// The interest lapses 2 s after the announcement: gw-a stops.
	wait.For(t, 10*time.Second, "interest expired", func() bool { return a.interest.len() == 0 })
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return true })
	last := w.latest["cluster"].Time
	w.waitFor(t, "cluster", func(s proto.Snapshot) bool { return s.Time.After(last.Add(time.Second)) })
	if got := w.latest["instance.gw-a"].Time; !got.Before(last.Add(time.Second)) {
		t.Fatalf("gw-a still published at %v after its interest expired (cluster at %v)", got, w.latest["cluster"].Time)
	}
}

func TestInstanceSnapshotsAllPublishesEveryInstance(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	startWith(t, Config{NATS: nc, Logger: quiet, InstanceSnapshots: InstanceSnapshotsAll}, true)
	w := watchSnapshots(t, nc)
	publishReport(t, nc, rp{inst: "gw-a", region: "eu", boot: "a", seq: 1, total: 7, active: 1})
	w.waitFor(t, "instance.gw-a", func(s proto.Snapshot) bool { return s.RequestsTotal == 7 })
}

func TestParseInstanceSnapshots(t *testing.T) {
	for _, m := range []InstanceSnapshots{InstanceSnapshotsOnDemand, InstanceSnapshotsAll} {
		got, err := ParseInstanceSnapshots(m.String())
		if err != nil || got != m {
			t.Errorf("ParseInstanceSnapshots(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseInstanceSnapshots("some"); err == nil {
		t.Error("accepted \"some\"")
	}
}

// TestInterestTableBounded: the table never grows past maxInterest, however
// many names are announced, and says so once.
func TestInterestTableBounded(t *testing.T) {
	tab := newInterestTable()
	now := time.Now()
	for i := range maxInterest {
		tab.until["gw-"+strconv.Itoa(i)] = now.Add(time.Minute)
	}
	in := proto.Interest{Instances: []string{"new-1", "new-2"}, TTL: time.Minute}
	if !tab.add(&in, now) {
		t.Fatal("overflow not reported")
	}
	if tab.add(&in, now) {
		t.Fatal("overflow reported twice")
	}
	if tab.len() != maxInterest {
		t.Fatalf("len %d, want %d", tab.len(), maxInterest)
	}
	if got := tab.wanted(now.Add(2 * time.Minute)); len(got) != 0 || tab.len() != 0 {
		t.Fatalf("expired entries kept: %d", tab.len())
	}
}
