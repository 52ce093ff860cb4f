package scale

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrInsane is returned by Check for figures that cannot be right.
var ErrInsane = errors.New("scale figures are not sane")

// Check reports figures that contradict each other or the run: it is the
// harness checking itself, not a performance target.
func (r Report) Check() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	n := float64(r.Instances)
	if r.ReportsPerS < 0.5*n || r.ReportsPerS > 1.5*n {
		bad("reports per second %.0f, want about %d (one per instance)", r.ReportsPerS, r.Instances)
	}
	if r.NATSInMsgsPerS < r.ReportsPerS*0.9 {
		bad("NATS received %.0f msgs/s, fewer than the %.0f reports/s published", r.NATSInMsgsPerS, r.ReportsPerS)
	}
	if len(r.NATSPerNode) != r.Nodes {
		bad("%d NATS nodes measured, %d ran", len(r.NATSPerNode), r.Nodes)
	}
	for _, node := range r.NATSPerNode {
		if node.CPU <= 0 || node.RSSMB <= 0 {
			bad("CPU or RSS of %s is zero: %+v", node.Name, node)
		}
	}
	r.checkGroups(bad)
	if r.SnapshotsPerS < 1+float64(r.Regions)-0.5 {
		bad("%.1f snapshots/s published, want at least the cluster and %d regions", r.SnapshotsPerS, r.Regions)
	}
	// A whole second's tick may fall on either side of a window's edge.
	if r.WindowS > 0 && r.SnapshotsPerS > r.DuePerS*(r.WindowS+1)/r.WindowS+0.5 {
		bad("%.1f snapshots/s published, more than the %.0f/s due", r.SnapshotsPerS, r.DuePerS)
	}
	if r.HistoryBytesPerS <= 0 || r.HistoryMsgsPerS < r.SnapshotsPerS*0.5 {
		bad("history grew %.0f B/s, %.1f msgs/s for %.1f snapshots/s", r.HistoryBytesPerS, r.HistoryMsgsPerS, r.SnapshotsPerS)
	}
	if len(r.State) == 0 {
		bad("no merge state stored")
	}
	for _, s := range r.State {
		if s.Bytes <= 0 {
			bad("merge state %s is empty", s.Key)
		}
	}
	if r.ClusterDelay.N == 0 || r.RegionDelay.N == 0 {
		bad("no cluster or region snapshot timed in the window")
	}
	if r.ClusterDelay.P50 < 0 || r.RegionDelay.P50 < 0 {
		bad("a snapshot arrived before its second: cluster %+v region %+v", r.ClusterDelay, r.RegionDelay)
	}
	if r.ClusterSeconds > int(r.WindowS+0.5) {
		bad("%d cluster snapshots timed in a %.1f s window", r.ClusterSeconds, r.WindowS)
	}
	if l := r.Latency; l != nil && (l.Snapshots == 0 || len(l.Off) > 0) {
		bad("cluster latency quantiles of %d snapshots not what the simulator sent: %v", l.Snapshots, l.Off)
	}
	if s := r.Subscribers; s != nil {
		s.check(bad)
	}
	for _, f := range r.Failovers {
		if f.GapMs <= 0 || f.Error != "" {
			bad("failover of %s: gap %.1f ms %s", f.Group, f.GapMs, f.Error)
		}
	}
	if !r.Exact.Exact {
		bad("totals not exact: cluster %d (errors %d), gateways published %d (errors %d); regions off: %v",
			r.Exact.GotTotal, r.Exact.GotErrors, r.Exact.WantTotal, r.Exact.WantErrors, r.Exact.RegionsOff)
	}
	if len(r.Faults) > 0 || r.BadSnapshots > 0 {
		bad("contract violations: %v, %d undecodable snapshots", r.Faults, r.BadSnapshots)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInsane, strings.Join(errs, "; "))
	}
	return nil
}

// checkGroups: every group measured, each merging group received the
// reports of its own regions (no more, no fewer), the regions dealt over
// the shards add up to all of them, and a cluster tier received none.
func (r Report) checkGroups(bad func(string, ...any)) {
	want := 1
	if r.Shards > 0 {
		want = r.Shards + 1
	}
	if len(r.Groups) != want {
		bad("%d aggregator groups measured, want %d", len(r.Groups), want)
	}
	var gateway float64
	regions := 0
	for _, g := range r.Groups {
		if g.Leader.CPU <= 0 || g.Leader.RSSMB <= 0 {
			bad("CPU or RSS of %s's leader is zero: %+v", g.Name, g.Leader)
		}
		if r.Aggregators > 1 && g.Follower == nil {
			bad("%s: %d aggregators but no follower measured", g.Name, r.Aggregators)
		}
		if g.Tier == tierCluster {
			if g.ReportsPerS != 0 || len(g.Regions) != 0 {
				bad("the cluster tier received %.0f reports/s (regions %v), want none", g.ReportsPerS, g.Regions)
			}
			if g.SnapshotsPerS < 0.5 {
				bad("the cluster tier published %.1f snapshots/s, want the cluster's", g.SnapshotsPerS)
			}
			continue
		}
		gateway += g.GatewayReportsPerS
		regions += len(g.Regions)
		if g.CPUPerReportUs <= 0 {
			bad("%s: CPU per report is zero", g.Name)
		}
		// More than its regions' reports means it hears other regions
		// (the aggregators' counters are scraped a little after the
		// simulator's, so the window edges differ by milliseconds). Fewer
		// is a figure — an overloaded leader lags — unless most are
		// missing.
		if g.ReportsPerS > 1.2*g.GatewayReportsPerS+1 || g.ReportsPerS < 0.5*g.GatewayReportsPerS {
			bad("%s received %.0f reports/s, its regions %v published %.0f/s", g.Name, g.ReportsPerS, g.Regions, g.GatewayReportsPerS)
		}
	}
	if regions != r.Regions || math.Abs(gateway-r.ReportsPerS) > 0.01*r.ReportsPerS+1 {
		bad("the groups merge %d regions, %.0f reports/s; the run has %d regions, %.0f reports/s", regions, gateway, r.Regions, r.ReportsPerS)
	}
}

func (s *Subscribers) check(bad func(string, ...any)) {
	// Figures of fewer subscribers than asked for are not the run's.
	if s.Connected != s.Wanted || s.DialFailures != 0 {
		bad("subscribers: %d connected and %d failed of %d (%s)", s.Connected, s.DialFailures, s.Wanted, s.FirstDialError)
	}
	if s.Delivered > s.Due || s.Current > s.Delivered || s.Repeats > s.Delivered {
		bad("subscribers: %d delivered (%d current, %d repeats) of %d due", s.Delivered, s.Current, s.Repeats, s.Due)
	}
	if s.Delivered < s.Due/2 {
		bad("subscribers: only %d of %d due snapshots delivered", s.Delivered, s.Due)
	}
	if s.Delay.N != s.Delivered || s.Delay.P50 < 0 {
		bad("subscribers: %d delays for %d deliveries, p50 %.1f ms", s.Delay.N, s.Delivered, s.Delay.P50)
	}
	if len(s.Faults) > 0 || s.Lost > 0 {
		bad("subscribers: %d connections lost, faults %v", s.Lost, s.Faults)
	}
}
