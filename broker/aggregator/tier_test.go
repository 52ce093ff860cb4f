package aggregator

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/broker/leader"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestTierConfig(t *testing.T) {
	for _, c := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{}, ""},
		{Config{Tier: TierAll}, ""},
		{Config{Tier: TierCluster}, ""},
		{Config{Tier: TierRegion, Regions: []string{"us", "eu"}}, ""},
		{Config{Tier: TierCluster, ClusterDeadline: 900 * time.Millisecond}, ""},
		{Config{Regions: []string{"eu"}}, "only the region tier takes regions"},
		{Config{Tier: TierCluster, Regions: []string{"eu"}}, "only the region tier takes regions"},
		{Config{Tier: TierRegion}, "needs Regions"},
		{Config{Tier: TierRegion, Regions: []string{"eu", "us.west"}}, `region "us.west" has character '.'`},
		{Config{Tier: "edge"}, `tier "edge": want all, region or cluster`},
		{Config{Tier: TierCluster, ClusterDeadline: time.Second}, "ClusterDeadline 1s"},
		{Config{Tier: TierCluster, ClusterDeadline: -time.Millisecond}, "ClusterDeadline -1ms"},
	} {
		err := c.cfg.Validate()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", c.cfg, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%+v: error %v, want one containing %q", c.cfg, err, c.wantErr)
		}
	}
}

// TestTierKeys: the single tier keeps today's keys; every shard has its own,
// the same for any order of its regions, and valid as a key-value key.
func TestTierKeys(t *testing.T) {
	key := regexp.MustCompile(`^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$`)
	long := make([]string, 40)
	for i := range long {
		long[i] = strings.Repeat("r", 20) + string(rune('a'+i%26)) + strings.Repeat("x", i)
	}
	for _, c := range []struct {
		cfg          Config
		lease, state string
	}{
		{Config{}, LeaseKey, StateKey},
		{Config{Tier: TierAll}, LeaseKey, StateKey},
		{Config{Tier: TierCluster}, "aggregator.cluster", "merge.cluster"},
		{Config{Tier: TierRegion, Regions: []string{"us", "eu", "us"}}, "aggregator.region.eu.us", "merge.region.eu.us"},
		{Config{Tier: TierRegion, Regions: []string{"eu"}}, "aggregator.region.eu", "merge.region.eu"},
	} {
		cfg := c.cfg.withDefaults()
		if cfg.leaseKey() != c.lease || cfg.stateKey() != c.state {
			t.Errorf("%+v: keys %s and %s, want %s and %s", c.cfg, cfg.leaseKey(), cfg.stateKey(), c.lease, c.state)
		}
	}
	cfg := Config{Tier: TierRegion, Regions: long}.withDefaults()
	if k := cfg.stateKey(); len(k) > 64 || !key.MatchString(k) || !key.MatchString(cfg.leaseKey()) {
		t.Errorf("a shard of %d long region names: keys %q and %q", len(long), k, cfg.leaseKey())
	}
}

// tierLog records every live snapshot with its publisher.
type tierLog struct {
	mu  sync.Mutex
	by  map[string]map[string]int // scope → publisher → snapshots
	top map[string]proto.Snapshot // scope → newest
}

func recordPublished(t *testing.T, nc *nats.Conn) *tierLog {
	p := &tierLog{by: map[string]map[string]int{}, top: map[string]proto.Snapshot{}}
	sub, err := nc.Subscribe(proto.SnapshotSubjectAll, func(m *nats.Msg) {
		s, err := proto.DecodeSnapshot(m.Data)
		if err != nil {
			t.Errorf("snapshot on %s: %v", m.Subject, err)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		sc := s.Scope.String()
		if p.by[sc] == nil {
			p.by[sc] = map[string]int{}
		}
		p.by[sc][m.Header.Get(PublisherHeader)]++
		if s.Time.After(p.top[sc].Time) {
			p.top[sc] = s
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return p
}

func (p *tierLog) latest(scope string) proto.Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.top[scope]
}

func (p *tierLog) publishers(scope string) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.by[scope] {
		out[k] = v
	}
	return out
}

// TestShardedTiers runs a shard per region and two cluster-tier
// aggregators on one NATS: each shard publishes only its regions and
// instances, the cluster tier only the cluster, whose totals are the sum;
// each tier elects its leader under its own lease key.
func TestShardedTiers(t *testing.T) {
	_, nc := natstest.StartTest(t)
	rec := recordPublished(t, nc)
	lc := leader.Config{TTL: time.Second}
	start := func(id string, tier Tier, regions ...string) *Aggregator {
		return startWith(t, Config{NATS: nc, Logger: quiet, ID: id, Tier: tier, Regions: regions, Leader: lc}, false)
	}
	eu := start("eu-1", TierRegion, "eu")
	us := start("us-1", TierRegion, "us")
	cl1, cl2 := start("cl-1", TierCluster), start("cl-2", TierCluster)
	wait.For(t, 10*time.Second, "a leader in every tier", func() bool {
		return eu.Leader() && us.Leader() && cl1.Leader() != cl2.Leader()
	})

	publishReport(t, nc, rp{inst: "gw-eu-1", region: "eu", boot: "b", seq: 1, total: 10, errs: 2, durMs: 100})
	publishReport(t, nc, rp{inst: "gw-us-1", region: "us", boot: "b", seq: 1, total: 5, durMs: 50})
	wait.For(t, 10*time.Second, "the cluster totals of both regions", func() bool {
		s := rec.latest("cluster")
		return s.RequestsTotal == 15 && s.RequestsError == 2 && s.Instances == 2 && s.AvgResponseTimeMs == 10
	})
	// On-demand instance snapshots: every shard hears the interest, the
	// one tracking the instance publishes it.
	in := proto.Interest{Version: proto.InterestVersion, Edge: "edge-test", Instances: []string{"gw-eu-1", "gw-us-1"}, TTL: time.Minute}
	data, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(proto.InterestSubject, data); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the followed instances' snapshots", func() bool {
		return rec.latest("instance.gw-eu-1").RequestsTotal == 10 && rec.latest("instance.gw-us-1").RequestsTotal == 5
	})
	for scope, want := range map[string]string{"region.eu": "eu-1", "instance.gw-eu-1": "eu-1", "region.us": "us-1", "instance.gw-us-1": "us-1"} {
		if got := rec.publishers(scope); len(got) != 1 || got[want] == 0 {
			t.Errorf("%s published by %v, want %s alone", scope, got, want)
		}
	}
	for id := range rec.publishers("cluster") {
		if id != "cl-1" && id != "cl-2" {
			t.Errorf("cluster snapshot published by %s, not the cluster tier", id)
		}
	}

	js := eu.js
	kv, err := js.KeyValue(context.Background(), LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"aggregator.region.eu", "aggregator.region.us", "aggregator.cluster"} {
		if _, err := kv.Get(context.Background(), k); err != nil {
			t.Errorf("lease %s: %v", k, err)
		}
	}
	if _, err := kv.Get(context.Background(), LeaseKey); err == nil {
		t.Errorf("a sharded cluster holds the single tier's lease %s", LeaseKey)
	}
	wait.For(t, 10*time.Second, "the cluster tier's state", func() bool {
		st, err := js.KeyValue(context.Background(), StateBucket)
		if err != nil {
			return false
		}
		_, err = st.Get(context.Background(), "merge.cluster")
		return err == nil
	})
}

// TestShardRejectsForeignRegion: a report of a region outside the shard is
// rejected and counted, never merged.
func TestShardRejectsForeignRegion(t *testing.T) {
	_, nc := natstest.StartTest(t)
	reg := prometheus.NewRegistry()
	a, err := New(Config{NATS: nc, Logger: quiet, Registerer: reg, Tier: TierRegion, Regions: []string{"eu"}, LeaderDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	data, err := new(rp{inst: "gw-us-1", region: "us", boot: "b", seq: 1, total: 3}.report(time.Now())).Encode()
	if err != nil {
		t.Fatal(err)
	}
	a.onShardReport(&nats.Msg{Subject: proto.ReportSubject("us", "gw-us-1"), Data: data})
	if got := testutil.ToFloat64(a.metrics.rejected.WithLabelValues(RejectShard.String())); got != 1 {
		t.Errorf("rejected as region_not_in_shard: %v, want 1", got)
	}
	if a.merger.Len() != 0 {
		t.Error("a foreign region's report was merged")
	}
	ok, _ := proto.DecodeReport(data)
	ok.Region, ok.Instance = "eu", "gw-eu-1"
	if data, err = ok.Encode(); err != nil {
		t.Fatal(err)
	}
	a.onShardReport(&nats.Msg{Subject: proto.ReportSubject("eu", "gw-eu-1"), Data: data})
	if a.merger.Len() != 1 {
		t.Error("the shard's own region's report was not merged")
	}
}
