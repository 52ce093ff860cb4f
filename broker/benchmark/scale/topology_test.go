package scale

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/aggregator"
)

// TestShardedCommandLines: the sharded design is the command lines of the
// Sharding contract — K region shards dealt the regions round robin, each
// of --aggregators processes with --tier region --regions, and a cluster
// tier of --tier cluster processes — while the single tier passes no
// --tier at all (today's behaviour).
func TestShardedCommandLines(t *testing.T) {
	cmd := func(...string) *exec.Cmd { return nil }
	regions := []string{"r0", "r1", "r2", "r3", "r4"}
	cfg := Config{Command: cmd, Instances: 1000, Regions: 5, Shards: 2}.withDefaults()
	gs := planGroups(cfg, regions)
	if len(gs) != 3 {
		t.Fatalf("%d groups, want 2 shards and the cluster tier", len(gs))
	}
	wantRegions := [][]string{{"r0", "r2", "r4"}, {"r1", "r3"}, nil}
	for i, g := range gs {
		if !slices.Equal(g.Regions, wantRegions[i]) {
			t.Errorf("%s regions %v, want %v", g.Name, g.Regions, wantRegions[i])
		}
	}
	line := func(g *group, i int) string {
		return strings.Join(aggregatorArgs(cfg, g, i, "nats://n", "127.0.0.1:1"), " ")
	}
	if got := line(gs[0], 1); !strings.Contains(got, "--tier region --regions r0,r2,r4") || !strings.Contains(got, "--id scale-shard-1-2") {
		t.Errorf("shard 1's second aggregator: %s", got)
	}
	if got := line(gs[1], 0); !strings.Contains(got, "--tier region --regions r1,r3") {
		t.Errorf("shard 2: %s", got)
	}
	if got := line(gs[2], 0); !strings.Contains(got, "--tier cluster") || strings.Contains(got, "--regions") {
		t.Errorf("cluster tier: %s", got)
	}

	single := planGroups(Config{Command: cmd}.withDefaults(), regions)
	if len(single) != 1 || !slices.Equal(single[0].Regions, regions) {
		t.Fatalf("single tier %+v", single)
	}
	got := strings.Join(aggregatorArgs(Config{Command: cmd}.withDefaults(), single[0], 0, "nats://n", "127.0.0.1:1"), " ")
	if want := "aggregator --nats-url nats://n --listen 127.0.0.1:1 --id scale-aggregator-1"; got != want {
		t.Errorf("single tier:\n got %s\nwant %s", got, want)
	}
}

// TestClusterAndLargeNCommandLines: three nodes route to each other and the
// aggregators keep three replicas; a run beyond the aggregators' default
// instance cap raises it, so that 100,000 instances are all tracked.
func TestClusterAndLargeNCommandLines(t *testing.T) {
	cmd := func(...string) *exec.Cmd { return nil }
	ports := []natsPorts{
		{client: "127.0.0.1:1", cluster: "127.0.0.1:2", mon: "127.0.0.1:3", admin: "127.0.0.1:4"},
		{client: "127.0.0.1:5", cluster: "127.0.0.1:6", mon: "127.0.0.1:7", admin: "127.0.0.1:8"},
		{client: "127.0.0.1:9", cluster: "127.0.0.1:10", mon: "127.0.0.1:11", admin: "127.0.0.1:12"},
	}
	args, err := natsArgs(ports, 1, "/d")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{"--listen 127.0.0.1:5", "--name scale-nats-2", "--data-dir /d/scale-nats-2", "--monitor-port 7",
		"--cluster-name scale --cluster-listen 127.0.0.1:6 --routes nats-route://127.0.0.1:2,nats-route://127.0.0.1:10"} {
		if !strings.Contains(got, want) {
			t.Errorf("node 2: %s\nlacks %s", got, want)
		}
	}
	if got, _ := natsArgs(ports[:1], 0, "/d"); slices.Contains(got, "--cluster-name") {
		t.Errorf("a single node joins a cluster: %v", got)
	}

	cfg := Config{Command: cmd, Instances: 100_000, NATSNodes: 3}.withDefaults()
	g := planGroups(cfg, []string{"r0"})[0]
	got = strings.Join(aggregatorArgs(cfg, g, 0, "nats://n", "127.0.0.1:1"), " ")
	for _, want := range []string{"--max-instances 100000", "--history-replicas 3 --state-replicas 3 --rollup-replicas 3"} {
		if !strings.Contains(got, want) {
			t.Errorf("aggregator: %s\nlacks %s", got, want)
		}
	}
	if cfg.Publishers < 3 {
		t.Errorf("%d publishers for 3 nodes", cfg.Publishers)
	}
	small := Config{Command: cmd, Instances: aggregator.DefaultMaxInstances}.withDefaults()
	if got := aggregatorArgs(small, g, 0, "nats://n", "127.0.0.1:1"); slices.Contains(got, "--max-instances") {
		t.Errorf("cap raised at N = the default cap: %v", got)
	}
	if got := strings.Join(edgeArgs(Config{Subscribers: 200}, "nats://n", "127.0.0.1:1"), " "); !strings.Contains(got, "--max-conns-per-addr 264") {
		t.Errorf("edge with 200 subscribers from one address: %s", got)
	}
}

func TestFollowedScopes(t *testing.T) {
	got := followedScopes(100, []string{"a", "b"}, 4)
	var names []string
	for _, f := range got {
		names = append(names, f.Scope.String()+"?"+f.query)
	}
	want := []string{"cluster?", "region.a?region=a", "region.b?region=b",
		"instance.sim-a-0?instance=sim-a-0", "instance.sim-b-25?instance=sim-b-25",
		"instance.sim-a-50?instance=sim-a-50", "instance.sim-b-75?instance=sim-b-75"}
	// Three regions: each instance in the next region, never past N.
	got3 := followedScopes(7, []string{"a", "b", "c"}, 3)
	for j, want := range []string{"instance.sim-a-0", "instance.sim-b-1", "instance.sim-c-5"} {
		if s := got3[4+j].Scope.String(); s != want {
			t.Errorf("instance %d of 3 among 7 in 3 regions: %s, want %s", j, s, want)
		}
	}
	if !slices.Equal(names, want) {
		t.Fatalf("scopes\n got %v\nwant %v", names, want)
	}
	if n := len(followedScopes(10, []string{"a"}, 0)); n != 2 {
		t.Fatalf("%d scopes without instances, want the cluster and the region", n)
	}
}

func TestParseStateValue(t *testing.T) {
	tests := []struct {
		in           string
		size, chunks int
		bad          bool
	}{
		{`{"regions":[]}`, 14, 0, false},
		{"\x1f\x8b gzipped", 10, 0, false},
		{`MSTC{"gen":"ab.a","chunks":3,"size":1200000,"sha256":"00"}`, 1200000, 3, false},
		{`MSTC{"chunks":0,"size":5}`, 0, 0, true},
		{`MSTC{"chunks":4,"size":3}`, 0, 0, true},
		{`MSTC{`, 0, 0, true},
	}
	for _, tc := range tests {
		size, chunks, err := parseStateValue([]byte(tc.in))
		if (err != nil) != tc.bad || size != tc.size || chunks != tc.chunks {
			t.Errorf("parseStateValue(%q) = %d, %d, %v", tc.in, size, chunks, err)
		}
	}
}

func FuzzParseStateValue(f *testing.F) {
	f.Add([]byte(`MSTC{"gen":"x.a","chunks":2,"size":9}`))
	f.Add([]byte("MSTC"))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		size, chunks, err := parseStateValue(b)
		if err == nil && (size < 0 || chunks < 0 || (chunks > 0 && size < chunks)) {
			t.Fatalf("parseStateValue(%q) = %d bytes in %d chunks", b, size, chunks)
		}
	})
}

func TestNextPhase(t *testing.T) {
	sec := time.Date(2026, 1, 1, 0, 0, 7, 0, time.UTC)
	phase := 400 * time.Millisecond
	for _, tc := range []struct{ now, want time.Duration }{
		{0, 400 * time.Millisecond},
		{400 * time.Millisecond, 400 * time.Millisecond},
		{450 * time.Millisecond, 450 * time.Millisecond}, // in the window: at once
		{400*time.Millisecond + phaseSlack/2, 1400 * time.Millisecond},
		{900 * time.Millisecond, 1400 * time.Millisecond},
	} {
		if got := nextPhase(sec.Add(tc.now), phase); !got.Equal(sec.Add(tc.want)) {
			t.Errorf("nextPhase(+%s) = +%s, want +%s", tc.now, got.Sub(sec), tc.want)
		}
	}
}

// TestSuccessor: a snapshot of the killed leader that arrives after the
// kill is not the successor's, however soon it arrives.
func TestSuccessor(t *testing.T) {
	kill := time.Date(2026, 1, 1, 0, 0, 10, 300_000_000, time.UTC) // 10.3 s
	at := func(ms int) time.Time { return kill.Add(time.Duration(ms) * time.Millisecond) }
	arrivals := []arrival{
		{Second: 1767225608, At: at(-1200)},
		{Second: 1767225609, At: at(-250)},
		{Second: 1767225610, At: at(1)}, // the old leader's, still on its way
		{Second: 1767225612, At: at(1900)},
		{Second: 1767225613, At: at(2700)},
	}
	first, prev, ok := successor(arrivals, kill)
	if !ok || first.Second != 1767225612 || prev != 1767225610 {
		t.Fatalf("successor = %+v, prev %d, %t; want second …612 after …610", first, prev, ok)
	}
	if _, _, ok := successor(arrivals[:3], kill); ok {
		t.Fatal("the old leader's late snapshot taken for the successor's")
	}
}
