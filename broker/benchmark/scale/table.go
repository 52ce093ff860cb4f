package scale

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	design := "single tier"
	if r.Shards > 0 {
		design = fmt.Sprintf("%d region shards + cluster tier", r.Shards)
	}
	p("instances / regions", "%d / %d", r.Instances, r.Regions)
	p("design", "%s, %d aggregator(s) per group, %d NATS node(s)", design, r.Aggregators, r.Nodes)
	p("window", "%.1f s (steal %.1f%%, load1 %.2f)", r.WindowS, 100*r.StealShare, r.Load1)
	p("reports", "%.0f/s, %.0f B/s (publish failures %d)", r.ReportsPerS, r.ReportBytesPerS, r.ReportFailures)
	if l := r.Latency; l != nil {
		p("latency histograms", "%d buckets per report; cluster p50/p99/max %.3f/%.3f/%.3f ms, simulator's %.3f/%.3f/%.3f ms (%d snapshots, %d off)",
			l.Want.Buckets, l.Last[0], l.Last[3], l.Last[4], l.Want.Ms[0], l.Want.Ms[3], l.Want.Ms[4], l.Snapshots, len(l.Off))
	} else {
		p("latency histograms", "none (reports carry only the coarse buckets)")
	}
	role := func(label string, ro Role) {
		p(label, "CPU %.3f cores, RSS %.1f MB, %.0f B per instance", ro.CPU, ro.RSSMB, ro.RSSPerInstance)
	}
	for _, g := range r.Groups {
		label := g.Name
		if len(g.Regions) > 0 && g.Tier != "" {
			label += " [" + strings.Join(g.Regions, ",") + "]"
		}
		role(label+" leader "+g.Leader.Name, g.Leader)
		if g.Follower != nil {
			role(label+" follower "+g.Follower.Name, *g.Follower)
		}
		if g.Tier == tierCluster {
			p(label+" published", "%.1f snapshots/s", g.SnapshotsPerS)
			continue
		}
		p(label+" per report", "%.2f µs leader CPU (%.0f reports/s of %.0f/s its gateways sent), %.1f snapshots/s",
			g.CPUPerReportUs, g.ReportsPerS, g.GatewayReportsPerS, g.SnapshotsPerS)
		p(label+" memory", "%.0f tracked instances, %.0f B Go heap per instance (its own figure)", g.TrackedInstances, g.HeapPerInstance)
		p(label+" merge state", "%.0f B, %.0f write errors in the window", g.StateBytes, g.StateWriteErrors)
	}
	role(r.NATS.Name, r.NATS)
	if len(r.NATSPerNode) > 1 {
		for _, n := range r.NATSPerNode {
			role("  "+n.Name, n)
		}
	}
	role("edge", r.Edge)
	p("snapshots published", "%.1f/s of %.0f/s due (instance snapshots: %s)", r.SnapshotsPerS, r.DuePerS, r.InstanceSnaps)
	p("cluster delay after the second", "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d seconds)", r.ClusterDelay.P50, r.ClusterDelay.P99, r.ClusterDelay.Max, r.ClusterSeconds)
	p("region delay after the second", "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d snapshots)", r.RegionDelay.P50, r.RegionDelay.P99, r.RegionDelay.Max, r.RegionDelay.N)
	if s := r.Subscribers; s != nil {
		p("WebSocket subscribers", "%d of %d connected, %d scopes (%d instances)", s.Connected, s.Wanted, s.Scopes, s.FollowedInstances)
		if s.FirstDialError != "" {
			p("  first dial error", "%s", s.FirstDialError)
		}
		p("  delivered", "%d of %d due, %d carrying the second they arrived in, %d repeats", s.Delivered, s.Due, s.Current, s.Repeats)
		p("  phase in the second", "p50 %.1f ms, max %.1f ms", s.Phase.P50, s.Phase.Max)
		p("  second to receipt", "p50 %.1f ms, p99 %.1f ms, max %.1f ms", s.Delay.P50, s.Delay.P99, s.Delay.Max)
		p("  Error events", "%d in the window %v, %d during the failovers and after the load", s.ErrorEvents, s.ErrorNotes, s.ErrorEventsAfter)
		p("  faults", "%d lost %v", s.Lost, s.Faults)
	}
	p("NATS in", "%.0f msgs/s, %.0f B/s", r.NATSInMsgsPerS, r.NATSInBytesPerS)
	p("NATS out", "%.0f msgs/s, %.0f B/s (slow consumers so far %d)", r.NATSOutMsgsPerS, r.NATSOutBytesPerS, r.NATSSlowConsumer)
	p("history stream", "%.0f msgs/s, %.0f B/s, %.0f B per instance per day (%.2f GB/day per 1,000 instances; one of %d replicas)",
		r.HistoryMsgsPerS, r.HistoryBytesPerS, r.HistoryBytesPerDayPerInstance, r.HistoryBytesPerDayPerInstance*1000/1e9, r.HistoryReplicas)
	for _, s := range r.State {
		chunks := "one message"
		if s.Chunks > 0 {
			chunks = fmt.Sprintf("%d chunks", s.Chunks)
		}
		p("merge state "+s.Key, "%d B stored, %s", s.Bytes, chunks)
	}
	for _, f := range r.Failovers {
		label := "failover (" + f.Group + " leader killed)"
		if f.Error != "" {
			p(label, "%s: %s", f.Killed, f.Error)
		} else {
			p(label, "%s: next %s snapshot after %.0f ms, %d seconds skipped", f.Killed, f.Scope, f.GapMs, f.SecondsSkipped)
		}
	}
	p("exact after the load stopped", "%t (cluster %d, gateways %d; regions off %v)", r.Exact.Exact, r.Exact.GotTotal, r.Exact.WantTotal, r.Exact.RegionsOff)
	p("contract violations", "%d %v", len(r.Faults), r.Faults)
	return tw.Flush()
}
