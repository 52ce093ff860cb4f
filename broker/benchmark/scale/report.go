package scale

import (
	"fmt"
	"slices"
)

// Report holds the figures of one run. Rates are per second of the window;
// CPU is in cores (CPU seconds per second).
type Report struct {
	Instances   int `json:"instances"`
	Regions     int `json:"regions"`
	Aggregators int `json:"aggregators"`
	// Nodes is the NATS servers (1, or 3 in a cluster); Shards the region
	// shards (0: the single tier).
	Nodes   int     `json:"nats_nodes"`
	Shards  int     `json:"shards"`
	WindowS float64 `json:"window_s"`

	ReportsPerS     float64 `json:"reports_per_s"`
	ReportBytesPerS float64 `json:"report_bytes_per_s"`
	ReportFailures  int64   `json:"report_publish_failures"`

	// Groups are the aggregator groups: the single tier, or each region
	// shard and then the cluster tier.
	Groups []Group `json:"groups"`
	// NATS is all NATS servers together (CPU and RSS summed), NATSPerNode
	// each of them.
	NATS        Role   `json:"nats"`
	NATSPerNode []Role `json:"nats_per_node"`
	Edge        Role   `json:"edge"`
	// Subscribers is what the edge's WebSocket subscribers saw (nil
	// without any).
	Subscribers *Subscribers `json:"subscribers,omitempty"`

	// SnapshotsPerS is what the leaders published; DuePerS is one per scope
	// and second: the cluster and regions, the instances the subscribers
	// follow, and every instance with InstanceSnaps "all".
	SnapshotsPerS float64 `json:"snapshots_per_s"`
	InstanceSnaps string  `json:"instance_snapshots"`
	DuePerS       float64 `json:"snapshots_due_per_s"`
	// ClusterDelay and RegionDelay are receipt minus the snapshot's second,
	// as a core NATS subscriber sees them; ClusterSeconds counts the
	// window's seconds a cluster snapshot arrived for.
	ClusterDelay   Dist `json:"cluster_delay"`
	RegionDelay    Dist `json:"region_delay"`
	ClusterSeconds int  `json:"cluster_seconds"`
	// Latency compares the cluster snapshots' latency quantiles in the
	// window with the simulator's exact histogram (nil when the reports
	// carry none).
	Latency *LatencySeen `json:"latency,omitempty"`

	// The NATS figures are summed over the nodes; with several nodes they
	// include the messages the nodes route to each other.
	NATSInMsgsPerS   float64 `json:"nats_in_msgs_per_s"`
	NATSInBytesPerS  float64 `json:"nats_in_bytes_per_s"`
	NATSOutMsgsPerS  float64 `json:"nats_out_msgs_per_s"`
	NATSOutBytesPerS float64 `json:"nats_out_bytes_per_s"`
	NATSSlowConsumer int64   `json:"nats_slow_consumers"`
	// History figures are one replica's; HistoryReplicas copies are kept.
	HistoryReplicas  int     `json:"history_replicas"`
	HistoryMsgsPerS  float64 `json:"history_msgs_per_s"`
	HistoryBytesPerS float64 `json:"history_bytes_per_s"`
	// HistoryBytesPerDayPerInstance is the history stream's growth per
	// simulated instance over a day at the window's rate.
	HistoryBytesPerDayPerInstance float64 `json:"history_bytes_per_day_per_instance"`

	// State is every merge state in the state bucket at the window's end.
	State []StateEntry `json:"state"`

	Failovers    []Failover `json:"failovers,omitempty"`
	Exact        Exactness  `json:"exact"`
	Faults       []string   `json:"faults"`
	BadSnapshots int        `json:"bad_snapshots"`

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
	// RSSPerInstance is (RSS at the window's end − RSS before the load) / N;
	// for an aggregator that tracks instances, over those it tracks (a
	// region shard's).
	RSSPerInstance float64 `json:"rss_bytes_per_instance"`
}

// Group is one aggregator group's figures.
type Group struct {
	Name string `json:"name"`
	// Tier is "" (single tier), "region" or "cluster".
	Tier    string   `json:"tier,omitempty"`
	Regions []string `json:"regions,omitempty"`
	// Leader is the figures of the aggregator that published in the
	// window, Follower the other's (if any).
	Leader   Role  `json:"leader"`
	Follower *Role `json:"follower,omitempty"`
	// ReportsPerS is what the leader received; GatewayReportsPerS what the
	// simulated gateways published in the group's regions.
	ReportsPerS        float64 `json:"reports_per_s"`
	GatewayReportsPerS float64 `json:"gateway_reports_per_s"`
	// CPUPerReportUs is the leader's CPU per report received.
	CPUPerReportUs float64 `json:"cpu_per_report_us"`
	SnapshotsPerS  float64 `json:"snapshots_per_s"`
	// TrackedInstances and HeapPerInstance are the leader's own figures:
	// its tracked-instances gauge, and its Go heap in use (window end
	// minus before the load) over them.
	TrackedInstances float64 `json:"tracked_instances"`
	HeapPerInstance  float64 `json:"heap_bytes_per_instance"`
	StateBytes       float64 `json:"state_bytes"`
	StateWriteErrors float64 `json:"state_write_errors"`
}

// Failover is the crash of a group's leader after the window.
type Failover struct {
	Group  string `json:"group"`
	Killed string `json:"killed"`
	// Scope is the scope whose next snapshot was timed.
	Scope string `json:"scope"`
	// GapMs is from the kill to the first snapshot of Scope of a later
	// second.
	GapMs          float64 `json:"gap_ms"`
	SecondsSkipped int     `json:"seconds_skipped"`
	// Error says why there is no gap, if there is none.
	Error string `json:"error,omitempty"`
}

// Exactness compares the final cluster and region snapshots with what the
// simulated gateways published, after the load stopped.
type Exactness struct {
	Exact      bool   `json:"exact"`
	WantTotal  uint64 `json:"want_total"`
	GotTotal   uint64 `json:"got_total"`
	WantErrors uint64 `json:"want_errors"`
	GotErrors  uint64 `json:"got_errors"`
	// RegionsOff names the regions whose totals were not exact.
	RegionsOff []string `json:"regions_off,omitempty"`
}

func newReport(cfg Config, cl *cluster, idle, a, b sample, obs *observer) Report {
	secs := b.At.Sub(a.At).Seconds()
	per := func(x, y float64) float64 { return (y - x) / secs }
	n := float64(cfg.Instances)
	role := func(name string) Role {
		u0, u1 := a.Usage[name], b.Usage[name]
		return Role{
			Name: name, CPU: (u1.CPU - u0.CPU).Seconds() / u1.At.Sub(u0.At).Seconds(),
			RSSMB:          float64(u1.RSS) / (1 << 20),
			RSSPerInstance: (float64(u1.RSS) - float64(idle.Usage[name].RSS)) / n,
		}
	}
	r := Report{
		Instances: cfg.Instances, Regions: cfg.Regions, Aggregators: cfg.Aggregators,
		Nodes: cfg.NATSNodes, Shards: cfg.Shards, WindowS: secs,
		ReportsPerS:      per(float64(a.Sim.Reports), float64(b.Sim.Reports)),
		ReportBytesPerS:  per(float64(a.Sim.Bytes), float64(b.Sim.Bytes)),
		ReportFailures:   b.Sim.Failed,
		Edge:             role("edge"),
		DuePerS:          float64(1 + cfg.Regions),
		InstanceSnaps:    cfg.InstanceSnapshots,
		HistoryReplicas:  cfg.NATSNodes,
		HistoryMsgsPerS:  per(float64(a.StreamMsgs), float64(b.StreamMsgs)),
		HistoryBytesPerS: per(float64(a.StreamBytes), float64(b.StreamBytes)),
		State:            b.State,
	}
	for i, node := range cl.nodes {
		ro := role(node.name)
		r.NATSPerNode = append(r.NATSPerNode, ro)
		r.NATS.CPU += ro.CPU
		r.NATS.RSSMB += ro.RSSMB
		r.NATS.RSSPerInstance += ro.RSSPerInstance
		va, vb := a.Varz[i], b.Varz[i]
		r.NATSInMsgsPerS += per(float64(va.InMsgs), float64(vb.InMsgs))
		r.NATSInBytesPerS += per(float64(va.InBytes), float64(vb.InBytes))
		r.NATSOutMsgsPerS += per(float64(va.OutMsgs), float64(vb.OutMsgs))
		r.NATSOutBytesPerS += per(float64(va.OutBytes), float64(vb.OutBytes))
		r.NATSSlowConsumer += vb.SlowCons
	}
	r.NATS.Name = "nats"
	if len(cl.nodes) > 1 {
		r.NATS.Name = fmt.Sprintf("nats (%d nodes)", len(cl.nodes))
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
	for _, g := range cl.groups {
		gr := newGroup(g, role, idle, a, b, per)
		r.SnapshotsPerS += gr.SnapshotsPerS
		r.Groups = append(r.Groups, gr)
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	r.ClusterDelay = distOf(obs.delays["cluster"])
	r.RegionDelay = distOf(obs.delays["region"])
	r.ClusterSeconds = r.ClusterDelay.N
	if l := obs.latency; l != nil {
		c := *l
		c.Off = slices.Clone(l.Off)
		r.Latency = &c
	}
	return r
}

const (
	metricPublished   = "meridian_aggregator_snapshots_published_total"
	metricReceived    = "meridian_aggregator_reports_received_total"
	metricLeader      = "meridian_aggregator_leader"
	metricTracked     = "meridian_aggregator_tracked_instances"
	metricStateSize   = "meridian_aggregator_state_size_bytes"
	metricStateErrs   = "meridian_aggregator_state_write_errors_total"
	metricHeapInuse   = "go_memstats_heap_inuse_bytes"
	metricStreamReady = "meridian_aggregator_history_stream_ready"
)

func newGroup(g *group, role func(string) Role, idle, a, b sample, per func(x, y float64) float64) Group {
	gr := Group{Name: g.Name, Tier: g.Tier, Regions: g.Regions}
	// The leader is the aggregator that published in the window.
	delta := func(p *proc, metric string) float64 { return b.Aggs[p.name][metric] - a.Aggs[p.name][metric] }
	lead := g.aggs[0]
	for _, p := range g.aggs {
		if delta(p, metricPublished) > delta(lead, metricPublished) {
			lead = p
		}
	}
	for _, p := range g.aggs {
		if p == lead {
			gr.Leader = role(p.name)
			continue
		}
		f := role(p.name)
		gr.Follower = &f
	}
	am, bm := a.Aggs[lead.name], b.Aggs[lead.name]
	gr.SnapshotsPerS = per(am[metricPublished], bm[metricPublished])
	gr.ReportsPerS = per(am[metricReceived], bm[metricReceived])
	if recv := bm[metricReceived] - am[metricReceived]; recv > 0 {
		gr.CPUPerReportUs = (b.Usage[lead.name].CPU - a.Usage[lead.name].CPU).Seconds() * 1e6 / recv
	}
	for _, region := range g.Regions {
		gr.GatewayReportsPerS += per(float64(a.Sim.Regions[region].Reports), float64(b.Sim.Regions[region].Reports))
	}
	gr.TrackedInstances = bm[metricTracked]
	if t := gr.TrackedInstances; t > 0 {
		gr.HeapPerInstance = (bm[metricHeapInuse] - idle.Aggs[lead.name][metricHeapInuse]) / t
		// A shard holds only its regions' instances: RSS per instance is
		// per instance it tracks, not per instance of the run.
		perTracked := func(ro *Role) {
			ro.RSSPerInstance = (float64(b.Usage[ro.Name].RSS) - float64(idle.Usage[ro.Name].RSS)) / t
		}
		perTracked(&gr.Leader)
		if gr.Follower != nil {
			perTracked(gr.Follower)
		}
	}
	gr.StateBytes = bm[metricStateSize]
	gr.StateWriteErrors = bm[metricStateErrs] - am[metricStateErrs]
	return gr
}

// followedDue adds to DuePerS the instance scopes the subscribers follow
// (with on-demand instance snapshots; with "all" they are due anyway).
func (r *Report) followedDue() {
	if r.Subscribers != nil && r.InstanceSnaps != "all" && r.Subscribers.Connected > 0 {
		r.DuePerS += float64(r.Subscribers.FollowedInstances)
	}
}

// regionGroups are the groups that merge reports (all but the cluster tier).
func (r Report) regionGroups() []Group {
	return slices.DeleteFunc(slices.Clone(r.Groups), func(g Group) bool { return g.Tier == tierCluster })
}
