package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	cmd := func(...string) *exec.Cmd { return nil }
	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"defaults", Config{Command: cmd}, ""},
		{"no command", Config{}, "Command is required"},
		{"negative instances", Config{Command: cmd, Instances: -1}, "instances -1"},
		{"more regions than instances", Config{Command: cmd, Instances: 2, Regions: 3}, "regions 3"},
		{"three aggregators", Config{Command: cmd, Aggregators: 3}, "aggregators 3"},
		{"short window", Config{Command: cmd, Duration: time.Second}, "duration 1s"},
		{"negative warmup", Config{Command: cmd, Warmup: -time.Second}, "negative"},
		{"negative publishers", Config{Command: cmd, Publishers: -2}, "publishers -2"},
		{"two nodes", Config{Command: cmd, NATSNodes: 2}, "NATS nodes 2"},
		{"three nodes", Config{Command: cmd, NATSNodes: 3}, ""},
		{"a shard per region", Config{Command: cmd, Regions: 4, Shards: 4}, ""},
		{"more shards than regions", Config{Command: cmd, Regions: 4, Shards: 5}, "shards 5"},
		{"negative subscribers", Config{Command: cmd, Subscribers: -1}, "subscribers -1"},
		{"no followed instances", Config{Command: cmd, FollowedInstances: -1}, ""},
		{"more followed than instances", Config{Command: cmd, Instances: 10, Regions: 1, FollowedInstances: 11}, "followed instances 11"},
		{"phase too late", Config{Command: cmd, Phase: 950 * time.Millisecond}, "phase 950ms"},
		{"no histograms", Config{Command: cmd, HistogramBuckets: -1}, ""},
		{"histogram too wide", Config{Command: cmd, HistogramBuckets: MaxHistogramBuckets + 1}, "histogram buckets"},
		{"histogram below none", Config{Command: cmd, HistogramBuckets: -2}, "histogram buckets -2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.withDefaults().Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid config rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
}

// TestSimulatorPublishesValidReportsAndExactSums checks, through a real NATS
// server, that every simulated instance reports about once a second on its
// own subject with valid, growing reports, and that the simulator's exact
// sums are those of the last reports received.
func TestSimulatorPublishesValidReportsAndExactSums(t *testing.T) {
	_, nc := natstest.StartTest(t)
	var mu sync.Mutex
	last := map[string]proto.Report{}
	count := 0
	sub, err := nc.Subscribe(proto.ReportSubjectAll, func(m *nats.Msg) {
		r, err := proto.DecodeReport(m.Data)
		mu.Lock()
		defer mu.Unlock()
		count++
		if err != nil {
			t.Errorf("invalid report: %v", err)
			return
		}
		if m.Subject != proto.ReportSubject(r.Region, r.Instance) {
			t.Errorf("report of %s/%s on %s", r.Region, r.Instance, m.Subject)
		}
		if prev, ok := last[r.Instance]; ok && (r.Seq != prev.Seq+1 || r.RequestsTotal <= prev.RequestsTotal) {
			t.Errorf("%s: seq %d total %d after seq %d total %d", r.Instance, r.Seq, r.RequestsTotal, prev.Seq, prev.RequestsTotal)
		}
		last[r.Instance] = r
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	const n = 50
	pub, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sim := NewSimulator([]*nats.Conn{pub}, n, []string{"eu", "us"}, 3, "boot-1", 0)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = sim.Run(ctx) })
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	wait.For(t, 30*time.Second, "two reports from every instance", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if len(last) != n {
			return false
		}
		for _, r := range last {
			if r.Seq < 2 {
				return false
			}
		}
		return true
	})
	stop()
	if runErr != nil {
		t.Fatal(runErr)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	want := sim.Totals()
	// Delivery to the subscriber is asynchronous: wait until it has all.
	wait.For(t, 10*time.Second, fmt.Sprintf("all %d published reports to arrive", want.Reports), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return int64(count) == want.Reports
	})
	mu.Lock()
	defer mu.Unlock()
	var total, success, errs uint64
	regions := map[string]int{}
	for _, r := range last {
		total += r.RequestsTotal
		success += r.RequestsSuccess
		errs += r.RequestsError
		regions[r.Region]++
	}
	if total != want.Total || success != want.Success || errs != want.Errors || errs == 0 {
		t.Fatalf("last reports sum to %d/%d/%d, simulator says %+v", total, success, errs, want)
	}
	if regions["eu"] != n/2 || regions["us"] != n/2 {
		t.Fatalf("instances per region %v, want round robin", regions)
	}
}

func TestParseProc(t *testing.T) {
	stat := []byte("4242 (meridian (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 2000000 3000 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("parseStatCPU = %v, %v; want 3s (300 ticks)", cpu, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 z 11 12"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
	status := []byte("Name:\tmeridian\nVmPeak:\t 9 kB\nVmRSS:\t   1234 kB\n")
	rss, err := parseStatusKB(status, "VmRSS:")
	if err != nil || rss != 1234<<10 {
		t.Fatalf("parseStatusKB = %d, %v", rss, err)
	}
	for _, bad := range []string{"", "VmRSS: 12\n", "VmRSS: x kB\n", "VmRSS: 12 MB\n"} {
		if _, err := parseStatusKB([]byte(bad), "VmRSS:"); err == nil {
			t.Errorf("parseStatusKB(%q) accepted", bad)
		}
	}
}

func FuzzParseProc(f *testing.F) {
	f.Add([]byte("1 (a) S 1 1 1 0 -1 0 0 0 0 0 5 6 0 0\n"))
	f.Add([]byte("VmRSS:\t 5 kB\n"))
	f.Add([]byte(")))"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if cpu, err := parseStatCPU(b); err == nil && cpu < 0 {
			t.Fatalf("negative CPU %v", cpu)
		}
		_, _ = parseStatusKB(b, "VmRSS:")
	})
}

// TestCheckCatchesInsaneFigures: the harness's self-check fails on each kind
// of contradiction, so a broken harness cannot pass CI.
func TestCheckCatchesInsaneFigures(t *testing.T) {
	leader := Role{Name: "a", CPU: 0.1, RSSMB: 20}
	good := Report{
		Instances: 100, Regions: 2, Aggregators: 2, Nodes: 1, WindowS: 5, ReportsPerS: 100, NATSInMsgsPerS: 400,
		NATSPerNode: []Role{{Name: "nats", CPU: 0.1, RSSMB: 20}},
		Groups: []Group{{Name: "aggregator", Regions: []string{"r0", "r1"}, Leader: leader, Follower: &leader,
			ReportsPerS: 100, GatewayReportsPerS: 100, CPUPerReportUs: 50, SnapshotsPerS: 3}},
		SnapshotsPerS: 3, DuePerS: 3, HistoryMsgsPerS: 3, HistoryBytesPerS: 1000,
		State:        []StateEntry{{Key: "merge", Bytes: 100}},
		ClusterDelay: Dist{N: 5, P50: 3}, RegionDelay: Dist{N: 10, P50: 3}, ClusterSeconds: 5,
		Subscribers: &Subscribers{Wanted: 4, Connected: 4, Due: 20, Delivered: 20, Current: 19, Repeats: 1,
			Delay: Dist{N: 20, P50: 410}},
		Failovers: []Failover{{Group: "aggregator", GapMs: 1500}}, Exact: Exactness{Exact: true},
	}
	sharded := good
	sharded.Shards = 2
	sharded.Groups = []Group{
		{Name: "shard-1", Tier: tierRegion, Regions: []string{"r0"}, Leader: leader, Follower: &leader,
			ReportsPerS: 50, GatewayReportsPerS: 50, CPUPerReportUs: 50, SnapshotsPerS: 1},
		{Name: "shard-2", Tier: tierRegion, Regions: []string{"r1"}, Leader: leader, Follower: &leader,
			ReportsPerS: 50, GatewayReportsPerS: 50, CPUPerReportUs: 50, SnapshotsPerS: 1},
		{Name: "cluster-tier", Tier: tierCluster, Leader: leader, Follower: &leader, SnapshotsPerS: 1},
	}
	for _, r := range []Report{good, sharded} {
		if err := r.Check(); err != nil {
			t.Fatalf("sane report rejected: %v", err)
		}
	}
	tests := []struct {
		name  string
		base  Report
		spoil func(*Report)
		want  string
	}{
		{"reports missing", good, func(r *Report) { r.ReportsPerS = 10 }, "reports per second"},
		{"nats saw fewer", good, func(r *Report) { r.NATSInMsgsPerS = 50 }, "NATS received"},
		{"no cpu", good, func(r *Report) { r.Groups[0].CPUPerReportUs = 0 }, "CPU per report"},
		{"leader idle", good, func(r *Report) { r.Groups[0].Leader.CPU = 0 }, "leader is zero"},
		{"node missing", good, func(r *Report) { r.Nodes = 3 }, "NATS nodes measured"},
		{"node idle", good, func(r *Report) { r.NATSPerNode[0].CPU = 0 }, "CPU or RSS of nats"},
		{"no follower", good, func(r *Report) { r.Groups[0].Follower = nil }, "no follower"},
		{"leader heard other regions", good, func(r *Report) { r.Groups[0].ReportsPerS = 150 }, "published"},
		{"leader heard few", good, func(r *Report) { r.Groups[0].ReportsPerS = 40 }, "received 40 reports/s"},
		{"no region snapshots", good, func(r *Report) { r.SnapshotsPerS = 1 }, "snapshots/s"},
		{"more than due", good, func(r *Report) { r.SnapshotsPerS = 10 }, "more than the"},
		{"no history", good, func(r *Report) { r.HistoryBytesPerS = 0 }, "history grew"},
		{"no state", good, func(r *Report) { r.State = nil }, "no merge state"},
		{"empty state", good, func(r *Report) { r.State[0].Bytes = 0 }, "is empty"},
		{"nothing timed", good, func(r *Report) { r.ClusterDelay.N = 0 }, "no cluster or region"},
		{"before its second", good, func(r *Report) { r.RegionDelay.P50 = -1 }, "before its second"},
		{"too many seconds", good, func(r *Report) { r.ClusterSeconds = 9 }, "cluster snapshots timed"},
		{"delivered more than due", good, func(r *Report) { r.Subscribers.Delivered = 21 }, "of 20 due"},
		{"delivered few", good, func(r *Report) { r.Subscribers.Delivered, r.Subscribers.Current, r.Subscribers.Delay.N = 5, 4, 5 }, "only 5 of 20"},
		{"subscribers uncounted", good, func(r *Report) { r.Subscribers.Connected = 3 }, "3 connected"},
		{"delays uncounted", good, func(r *Report) { r.Subscribers.Delay.N = 3 }, "3 delays for 20"},
		{"subscriber fault", good, func(r *Report) { r.Subscribers.Faults = []string{"cluster: second 5 after 6"} }, "faults"},
		{"subscriber lost", good, func(r *Report) { r.Subscribers.Lost = 1 }, "1 connections lost"},
		{"no failover gap", good, func(r *Report) { r.Failovers[0].GapMs = 0 }, "failover of aggregator"},
		{"inexact", good, func(r *Report) { r.Exact = Exactness{WantTotal: 5, GotTotal: 4} }, "not exact"},
		{"latency off", good, func(r *Report) { r.Latency = &LatencySeen{Snapshots: 5, Off: []string{"q0.5 off"}} }, "cluster latency quantiles"},
		{"latency unseen", good, func(r *Report) { r.Latency = &LatencySeen{} }, "cluster latency quantiles of 0"},
		{"backwards", good, func(r *Report) { r.Faults = []string{"cluster: totals went backwards"} }, "contract violations"},
		{"shard missing", sharded, func(r *Report) { r.Groups = r.Groups[1:] }, "groups measured"},
		{"shards overlap", sharded, func(r *Report) { r.Groups[1].Regions = []string{"r0", "r1"} }, "the groups merge 3 regions"},
		{"shard heard all", sharded, func(r *Report) { r.Groups[0].ReportsPerS = 100 }, "shard-1 received 100"},
		{"cluster tier got reports", sharded, func(r *Report) { r.Groups[2].ReportsPerS = 100 }, "cluster tier received"},
		{"cluster tier silent", sharded, func(r *Report) { r.Groups[2].SnapshotsPerS = 0 }, "cluster tier published"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := deepCopy(tc.base)
			tc.spoil(&r)
			if err := r.Check(); !errors.Is(err, ErrInsane) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrInsane naming %q", err, tc.want)
			}
		})
	}
}

// deepCopy copies r through JSON, so that a test case's spoiling never
// touches the shared base.
func deepCopy(r Report) Report {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	var c Report
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return c
}
