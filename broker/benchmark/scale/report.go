package scale

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Report holds the figures of one run. Rates are per second of the window;
// CPU is in cores (CPU seconds per second).
type Report struct {
	Instances   int     `json:"instances"`
	Regions     int     `json:"regions"`
	Aggregators int     `json:"aggregators"`
	WindowS     float64 `json:"window_s"`

	ReportsPerS     float64 `json:"reports_per_s"`
	ReportBytesPerS float64 `json:"report_bytes_per_s"`
	ReportFailures  int64   `json:"report_publish_failures"`

	// Aggregator is the leader's figures, Follower the other's (if any).
	Aggregator Role  `json:"aggregator"`
	Follower   *Role `json:"follower,omitempty"`
	NATS       Role  `json:"nats"`
	Edge       Role  `json:"edge"`
	// AggregatorCPUPerReportUs is the leader's CPU per report received.
	AggregatorCPUPerReportUs float64 `json:"aggregator_cpu_per_report_us"`

	// SnapshotsPerS is what the leader published; DuePerS is one per scope
	// and second: the cluster and regions, and every instance with
	// InstanceSnaps "all" (with "on-demand" nobody follows an instance here).
	SnapshotsPerS float64 `json:"snapshots_per_s"`
	InstanceSnaps string  `json:"instance_snapshots"`
	DuePerS       float64 `json:"snapshots_due_per_s"`
	// ClusterDelay and RegionDelay are receipt minus the snapshot's second,
	// as a core NATS subscriber sees them; ClusterSeconds counts the
	// window's seconds a cluster snapshot arrived for.
	ClusterDelay   Dist `json:"cluster_delay"`
	RegionDelay    Dist `json:"region_delay"`
	ClusterSeconds int  `json:"cluster_seconds"`

	NATSInMsgsPerS   float64 `json:"nats_in_msgs_per_s"`
	NATSInBytesPerS  float64 `json:"nats_in_bytes_per_s"`
	NATSOutMsgsPerS  float64 `json:"nats_out_msgs_per_s"`
	NATSOutBytesPerS float64 `json:"nats_out_bytes_per_s"`
	NATSSlowConsumer int64   `json:"nats_slow_consumers"`
	HistoryMsgsPerS  float64 `json:"history_msgs_per_s"`
	HistoryBytesPerS float64 `json:"history_bytes_per_s"`
	// HistoryBytesPerDayPerInstance is the history stream's growth per
	// simulated instance over a day at the window's rate.
	HistoryBytesPerDayPerInstance float64 `json:"history_bytes_per_day_per_instance"`

	StateBytes       float64 `json:"state_bytes"`
	StateWriteErrors float64 `json:"state_write_errors"`

	Failover     *Failover `json:"failover,omitempty"`
	Exact        Exactness `json:"exact"`
	Faults       []string  `json:"faults"`
	BadSnapshots int       `json:"bad_snapshots"`

	// StealShare is the share of the machine's CPU time the hypervisor
	// stole in the window; Load1 the one-minute load average at its end.
	StealShare float64 `json:"steal_share"`
	Load1      float64 `json:"load1"`
}

// Role is one process's figures.
type Role struct {
	Name  string  `json:"name"`
	CPU   float64 `json:"cpu_cores"`
	RSSMB float64 `json:"rss_mb"`
	// RSSPerInstance is (RSS at the window's end − RSS before the load) / N.
	RSSPerInstance float64 `json:"rss_bytes_per_instance"`
}

// Failover is the crash of the leader after the window.
type Failover struct {
	Killed string `json:"killed"`
	// GapMs is from the kill to the first cluster snapshot of a later second.
	GapMs          float64 `json:"gap_ms"`
	SecondsSkipped int     `json:"seconds_skipped"`
	// Error says why there is no gap, if there is none.
	Error string `json:"error,omitempty"`
}

// Exactness compares the final cluster snapshot with what the simulated
// gateways published, after the load stopped.
type Exactness struct {
	Exact      bool   `json:"exact"`
	WantTotal  uint64 `json:"want_total"`
	GotTotal   uint64 `json:"got_total"`
	WantErrors uint64 `json:"want_errors"`
	GotErrors  uint64 `json:"got_errors"`
}

func newReport(cfg Config, idle usages, a, b sample, obs *observer) Report {
	secs := b.At.Sub(a.At).Seconds()
	per := func(x, y float64) float64 { return (y - x) / secs }
	n := float64(cfg.Instances)
	role := func(name string) Role {
		u0, u1 := a.Usage[name], b.Usage[name]
		return Role{
			Name: name, CPU: (u1.CPU - u0.CPU).Seconds() / u1.At.Sub(u0.At).Seconds(),
			RSSMB:          float64(u1.RSS) / (1 << 20),
			RSSPerInstance: (float64(u1.RSS) - float64(idle[name].RSS)) / n,
		}
	}
	r := Report{
		Instances: cfg.Instances, Regions: cfg.Regions, Aggregators: cfg.Aggregators, WindowS: secs,
		ReportsPerS:     per(float64(a.Sim.Reports), float64(b.Sim.Reports)),
		ReportBytesPerS: per(float64(a.Sim.Bytes), float64(b.Sim.Bytes)),
		ReportFailures:  b.Sim.Failed,
		NATS:            role("nats"),
		Edge:            role("edge"),
		DuePerS:         float64(1 + cfg.Regions),
		InstanceSnaps:   cfg.InstanceSnapshots,

		NATSInMsgsPerS:   per(float64(a.Varz.InMsgs), float64(b.Varz.InMsgs)),
		NATSInBytesPerS:  per(float64(a.Varz.InBytes), float64(b.Varz.InBytes)),
		NATSOutMsgsPerS:  per(float64(a.Varz.OutMsgs), float64(b.Varz.OutMsgs)),
		NATSOutBytesPerS: per(float64(a.Varz.OutBytes), float64(b.Varz.OutBytes)),
		NATSSlowConsumer: b.Varz.SlowCons,
		HistoryMsgsPerS:  per(float64(a.StreamMsgs), float64(b.StreamMsgs)),
		HistoryBytesPerS: per(float64(a.StreamBytes), float64(b.StreamBytes)),
	}
	if cfg.InstanceSnapshots == "all" {
		r.DuePerS += n
	} else {
		r.InstanceSnaps = "on-demand"
	}
	r.HistoryBytesPerDayPerInstance = r.HistoryBytesPerS * 86400 / n
	if d := b.Machine.Total - a.Machine.Total; d > 0 {
		r.StealShare = float64(b.Machine.Steal-a.Machine.Steal) / float64(d)
	}
	r.Load1 = b.Machine.Load1
	// The leader is the aggregator that published in the window.
	lead := 0
	for i := range b.Aggs {
		if b.Aggs[i]["meridian_aggregator_snapshots_published_total"]-a.Aggs[i]["meridian_aggregator_snapshots_published_total"] >
			b.Aggs[lead]["meridian_aggregator_snapshots_published_total"]-a.Aggs[lead]["meridian_aggregator_snapshots_published_total"] {
			lead = i
		}
	}
	for i := range b.Aggs {
		name := fmt.Sprintf("aggregator-%d", i+1)
		if i == lead {
			r.Aggregator = role(name)
			continue
		}
		f := role(name)
		r.Follower = &f
	}
	am, bm := a.Aggs[lead], b.Aggs[lead]
	r.SnapshotsPerS = per(am["meridian_aggregator_snapshots_published_total"], bm["meridian_aggregator_snapshots_published_total"])
	if recv := bm["meridian_aggregator_reports_received_total"] - am["meridian_aggregator_reports_received_total"]; recv > 0 {
		r.AggregatorCPUPerReportUs = (b.Usage[r.Aggregator.Name].CPU - a.Usage[r.Aggregator.Name].CPU).Seconds() * 1e6 / recv
	}
	r.StateBytes = bm["meridian_aggregator_state_size_bytes"]
	r.StateWriteErrors = bm["meridian_aggregator_state_write_errors_total"] - am["meridian_aggregator_state_write_errors_total"]

	obs.mu.Lock()
	defer obs.mu.Unlock()
	r.ClusterDelay = distOf(obs.delays["cluster"])
	r.RegionDelay = distOf(obs.delays["region"])
	r.ClusterSeconds = r.ClusterDelay.N
	return r
}

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
	if r.AggregatorCPUPerReportUs <= 0 || r.Aggregator.CPU <= 0 || r.NATS.CPU <= 0 || r.Aggregator.RSSMB <= 0 {
		bad("CPU or RSS figures are zero: %+v %+v", r.Aggregator, r.NATS)
	}
	if r.SnapshotsPerS < 1+float64(r.Regions)-0.5 {
		bad("%.1f snapshots/s published, want at least the cluster and %d regions", r.SnapshotsPerS, r.Regions)
	}
	if r.HistoryBytesPerS <= 0 || r.HistoryMsgsPerS < r.SnapshotsPerS*0.5 {
		bad("history grew %.0f B/s, %.1f msgs/s for %.1f snapshots/s", r.HistoryBytesPerS, r.HistoryMsgsPerS, r.SnapshotsPerS)
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
	if r.Failover != nil && (r.Failover.GapMs <= 0 || r.Failover.Error != "") {
		bad("failover gap %.1f ms %s", r.Failover.GapMs, r.Failover.Error)
	}
	if !r.Exact.Exact {
		bad("totals not exact: cluster %d (errors %d), gateways published %d (errors %d)",
			r.Exact.GotTotal, r.Exact.GotErrors, r.Exact.WantTotal, r.Exact.WantErrors)
	}
	if len(r.Faults) > 0 || r.BadSnapshots > 0 {
		bad("contract violations: %v, %d undecodable snapshots", r.Faults, r.BadSnapshots)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInsane, strings.Join(errs, "; "))
	}
	return nil
}

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	p("instances / regions / aggregators", "%d / %d / %d", r.Instances, r.Regions, r.Aggregators)
	p("window", "%.1f s (steal %.1f%%, load1 %.2f)", r.WindowS, 100*r.StealShare, r.Load1)
	p("reports", "%.0f/s, %.0f B/s (publish failures %d)", r.ReportsPerS, r.ReportBytesPerS, r.ReportFailures)
	roles := []Role{r.Aggregator}
	if r.Follower != nil {
		roles = append(roles, *r.Follower)
	}
	roles = append(roles, r.NATS, r.Edge)
	for i, ro := range roles {
		label := ro.Name
		if i == 0 {
			label += " (leader)"
		}
		p(label, "CPU %.3f cores, RSS %.1f MB, %.0f B per instance", ro.CPU, ro.RSSMB, ro.RSSPerInstance)
	}
	p("aggregator CPU per report", "%.2f µs", r.AggregatorCPUPerReportUs)
	p("snapshots published", "%.0f/s of %.0f/s due (instance snapshots: %s)", r.SnapshotsPerS, r.DuePerS, r.InstanceSnaps)
	p("cluster delay after the second", "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d seconds)", r.ClusterDelay.P50, r.ClusterDelay.P99, r.ClusterDelay.Max, r.ClusterSeconds)
	p("region delay after the second", "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d snapshots)", r.RegionDelay.P50, r.RegionDelay.P99, r.RegionDelay.Max, r.RegionDelay.N)
	p("NATS in", "%.0f msgs/s, %.0f B/s", r.NATSInMsgsPerS, r.NATSInBytesPerS)
	p("NATS out", "%.0f msgs/s, %.0f B/s (slow consumers so far %d)", r.NATSOutMsgsPerS, r.NATSOutBytesPerS, r.NATSSlowConsumer)
	p("history stream", "%.0f msgs/s, %.0f B/s, %.0f B per instance per day (%.2f GB/day per 1,000 instances)",
		r.HistoryMsgsPerS, r.HistoryBytesPerS, r.HistoryBytesPerDayPerInstance, r.HistoryBytesPerDayPerInstance*1000/1e9)
	p("merge state", "%.0f B, %.0f write errors in the window", r.StateBytes, r.StateWriteErrors)
	if f := r.Failover; f != nil {
		if f.Error != "" {
			p("failover (leader killed)", "%s: %s", f.Killed, f.Error)
		} else {
			p("failover (leader killed)", "%s: next cluster snapshot after %.0f ms, %d seconds skipped", f.Killed, f.GapMs, f.SecondsSkipped)
		}
	}
	p("exact after the load stopped", "%t (cluster %d, gateways %d)", r.Exact.Exact, r.Exact.GotTotal, r.Exact.WantTotal)
	p("contract violations", "%d %v", len(r.Faults), r.Faults)
	return tw.Flush()
}
