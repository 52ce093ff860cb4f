package aggregator

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// StateVersion is the version of State this build writes and reads.
const StateVersion = 1

// ErrInvalidState means a State given to Restore is of an unknown version or
// breaks an invariant of the merge; the Merger is left unchanged.
var ErrInvalidState = errors.New("invalid merger state")

// State is a Merger's complete state as plain data, for persisting it (as
// JSON) so that another aggregator can take over without losing or
// double-counting anything. With the default 10s window it is about 1 KB
// of JSON per instance, over half of it window samples: 1000 instances come
// close to NATS' default 1 MB payload limit, so whoever persists it should
// compress or split it.
type State struct {
	Version int `json:"v"`
	// Tick is the unix second of the merger's newest tick, 0 before the
	// first. A leader persists the state after publishing a tick's
	// snapshots, so its successor knows which seconds are published.
	Tick int64 `json:"tick,omitempty"`
	// Totals and Window are the cluster scope's.
	Totals    Totals          `json:"totals"`
	Window    []WindowSample  `json:"window,omitempty"`
	Regions   []RegionState   `json:"regions"`
	Instances []InstanceState `json:"instances"`
}

// WindowSample is one tick of a scope's response-time window: the cumulative
// sum and count at unix second Time (math.MinInt64 for the seed sample, the
// baseline before the scope's first tick).
type WindowSample struct {
	Time             int64  `json:"t"`
	DurationSumNanos uint64 `json:"sum"`
	DurationCount    uint64 `json:"count"`
}

// RegionState is one region's part of State.
type RegionState struct {
	Region     string         `json:"region"`
	Totals     Totals         `json:"totals"`
	LastReport time.Time      `json:"last_report"`
	Window     []WindowSample `json:"window,omitempty"`
}

// InstanceState is one instance's part of State.
type InstanceState struct {
	Instance   string        `json:"instance"`
	Region     string        `json:"region"`
	BootID     string        `json:"boot_id"`
	PrevBootID string        `json:"prev_boot_id,omitempty"`
	Seq        uint64        `json:"seq"`
	StartTime  time.Time     `json:"start_time"`
	LastReport time.Time     `json:"last_report"`
	Interval   time.Duration `json:"interval_ns"`
	Final      bool          `json:"final,omitempty"`
	// Raw are the current boot's counters as last reported; Offsets what
	// earlier boots counted. The instance scope's counters are Offsets + Raw.
	Raw               Totals         `json:"raw"`
	LatencyBuckets    []uint64       `json:"latency_buckets"`
	ActiveConnections int64          `json:"active_connections"`
	Offsets           Totals         `json:"offsets"`
	Window            []WindowSample `json:"window,omitempty"`
	// The latency histograms are deliberately not kept: an instance's
	// histogram is up to a few KB (against ~70 B gzipped for the rest), which
	// would push a thousand instances' state past NATS' 1 MB payload.
	// Restore keeps the latency state the merger built from the reports it
	// applied itself (a hot follower has it all); a merger without it starts
	// empty windows, and each instance's first report only sets its
	// histogram baseline (see Merger.recordLatency).
}

// State returns a deep copy of the merger's state.
func (m *Merger) State() State {
	s := State{
		Version:   StateVersion,
		Tick:      m.tick,
		Totals:    m.cluster.totals,
		Window:    m.cluster.win.samples(),
		Regions:   make([]RegionState, 0, len(m.regionsBy)),
		Instances: make([]InstanceState, 0, len(m.instsBy)),
	}
	for _, rg := range m.regionsBy {
		s.Regions = append(s.Regions, RegionState{
			Region:     rg.name,
			Totals:     rg.totals,
			LastReport: rg.lastSeen,
			Window:     rg.win.samples(),
		})
	}
	for _, in := range m.instsBy {
		s.Instances = append(s.Instances, InstanceState{
			Instance:          in.name,
			Region:            in.region.name,
			BootID:            in.boot,
			PrevBootID:        in.prevBoot,
			Seq:               in.seq,
			StartTime:         in.start,
			LastReport:        in.lastSeen,
			Interval:          in.interval,
			Final:             in.final,
			Raw:               in.raw,
			LatencyBuckets:    slices.Clone(in.buckets[:]),
			ActiveConnections: in.active,
			Offsets:           in.offsets,
			Window:            in.win.samples(),
		})
	}
	return s
}

// Restore replaces the merger's state with s, after checking it. The merger
// keeps its own configuration; windows longer than its AvgWindow keep their
// newest samples, and scopes without samples restart their window at the
// restore. On error the merger is unchanged.
func (m *Merger) Restore(s State) error {
	if err := validateState(&s); err != nil {
		return err
	}
	n := NewMerger(m.cfg)
	n.cluster.totals = s.Totals
	n.cluster.win = restoreWindow(n.width, s.Window, s.Totals.DurationSumNanos, s.Totals.DurationCount)
	for _, r := range s.Regions {
		rg := &regionState{
			name:     r.Region,
			lastSeen: r.LastReport,
			scopeState: scopeState{
				totals: r.Totals,
				win:    restoreWindow(n.width, r.Window, r.Totals.DurationSumNanos, r.Totals.DurationCount),
			},
		}
		n.regions[rg.name] = rg
		n.regionsBy = append(n.regionsBy, rg)
	}
	for _, is := range s.Instances {
		in := &instState{
			name:     is.Instance,
			region:   n.regions[is.Region],
			boot:     is.BootID,
			prevBoot: is.PrevBootID,
			seq:      is.Seq,
			start:    is.StartTime,
			lastSeen: is.LastReport,
			interval: is.Interval,
			final:    is.Final,
			raw:      is.Raw,
			active:   is.ActiveConnections,
			offsets:  is.Offsets,
		}
		copy(in.buckets[:], is.LatencyBuckets)
		c := in.contribution()
		in.win = restoreWindow(n.width, is.Window, c.DurationSumNanos, c.DurationCount)
		in.region.members++
		n.insts[in.name] = in
		n.instsBy = append(n.instsBy, in)
	}
	slices.SortFunc(n.regionsBy, func(a, b *regionState) int { return cmp.Compare(a.name, b.name) })
	slices.SortFunc(n.instsBy, func(a, b *instState) int { return cmp.Compare(a.name, b.name) })
	n.invalid = m.invalid
	n.tick = max(m.tick, s.Tick)
	n.keepLatency(m)
	*m = *n
	return nil
}

func validateState(s *State) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("restore merger state: "+format+": %w", append(args, ErrInvalidState)...)
	}
	if s.Version != StateVersion {
		return bad("version %d (this build reads %d)", s.Version, StateVersion)
	}
	if !s.Totals.consistent() {
		return bad("cluster totals: success + error != total")
	}
	if err := validateSamples(s.Window); err != nil {
		return bad("cluster window: %v", err)
	}
	regions := make(map[string]bool, len(s.Regions))
	for _, r := range s.Regions {
		if err := proto.ValidateToken("region", r.Region); err != nil {
			return bad("%v", err)
		}
		if regions[r.Region] {
			return bad("region %q listed twice", r.Region)
		}
		regions[r.Region] = true
		if !r.Totals.consistent() || r.Totals.RequestsTotal > s.Totals.RequestsTotal {
			return bad("region %q: totals inconsistent or above the cluster's", r.Region)
		}
		if err := validateSamples(r.Window); err != nil {
			return bad("region %q window: %v", r.Region, err)
		}
	}
	insts := make(map[string]bool, len(s.Instances))
	for _, is := range s.Instances {
		if err := proto.ValidateToken("instance", is.Instance); err != nil {
			return bad("%v", err)
		}
		if insts[is.Instance] {
			return bad("instance %q listed twice", is.Instance)
		}
		insts[is.Instance] = true
		switch {
		case !regions[is.Region]:
			return bad("instance %q: region %q is not listed", is.Instance, is.Region)
		case is.BootID == "" || is.Seq == 0 || is.Interval <= 0 || is.ActiveConnections < 0:
			return bad("instance %q: boot_id, seq, interval or active_connections out of range", is.Instance)
		case len(is.LatencyBuckets) != proto.NumLatencyBuckets:
			return bad("instance %q: %d latency buckets, want %d", is.Instance, len(is.LatencyBuckets), proto.NumLatencyBuckets)
		case !is.Raw.consistent() || !is.Offsets.consistent():
			return bad("instance %q: success + error != total", is.Instance)
		}
		c := is.Offsets.add(is.Raw)
		if c.RequestsTotal < is.Raw.RequestsTotal || c.RequestsTotal > s.Totals.RequestsTotal {
			return bad("instance %q: counts overflow or exceed the cluster's", is.Instance)
		}
		if err := validateSamples(is.Window); err != nil {
			return bad("instance %q window: %v", is.Instance, err)
		}
	}
	return nil
}

func validateSamples(ss []WindowSample) error {
	for i := 1; i < len(ss); i++ {
		if ss[i].Time <= ss[i-1].Time {
			return fmt.Errorf("sample times are not increasing")
		}
	}
	return nil
}
