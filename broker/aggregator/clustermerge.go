package aggregator

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// ClusterMerger merges region snapshots, as region shards (TierRegion)
// publish them, into the cluster snapshot that a single-tier Merger fed
// every report would compute. The argument, field by field:
//
//   - The single tier adds each report's delta to the cluster and to the
//     report's region, and never subtracts: the cluster's cumulative
//     counters, duration sum (modulo 2^64) and duration count are at every
//     tick the sum of its regions', plus what regions forgotten since had
//     counted. So the sum of each region's latest snapshot is the
//     cluster's, and it never decreases, since each region's latest only
//     moves forward. A region the shard forgot (no live instance for
//     ForgetAfter) and that comes back starts its counters again: a region
//     snapshot whose counters went down after one without live instances
//     is such a new life, and the old life's counters are kept (retired),
//     as the single tier keeps them in the cluster's. Any other decrease
//     (a shard that lost its state) is held at the latest.
//   - avg_response_time is the cluster window's Σduration/Σcount; the
//     window samples the cumulative (sum, count) at each tick, so sampling
//     the summed region totals at the same ticks gives the same samples and
//     the same mean — never an average of region averages.
//   - Each region snapshot carries the histogram of the requests reported
//     in its tick; the cluster's tick histogram is their sum (histograms
//     over fixed buckets add exactly), kept over the same window, so the
//     percentiles are those of the merged window, never averages of
//     percentiles.
//   - Instances and active connections are sums over the live instances,
//     which partition into the regions' live instances.
//
// Where it can differ: a region snapshot that arrives after the cluster's
// second was published counts in the next second (its counters are
// cumulative, so only that second is late; its histogram lands one tick
// later); the histogram of a tick a region shard computed but never
// published (its leader died after the tick, its follower was not
// publishing) is missing from the percentiles; an instance that moves
// between shards counts its current boot again in the new shard.
//
// A ClusterMerger is not safe for concurrent use; the Aggregator guards it
// with its mutex.
type ClusterMerger struct {
	cfg        MergerConfig
	width      int64
	staleAfter time.Duration

	regions   map[string]*regionPart
	regionsBy []*regionPart // sorted by name, for State
	win       window
	lat       runLat
	tick      int64 // newest tick, unix seconds; 0 before the first
	invalid   uint64
	held      uint64 // region snapshots whose counters went down, held
	retired   Totals // what earlier lives of regions counted
}

// regionPart is a region's latest snapshot as the cluster tier holds it.
type regionPart struct {
	name      string
	sec       int64 // unix second of the latest snapshot
	totals    Totals
	active    int64
	instances int
	seen      time.Time // the merger's clock at its arrival; zero after Restore
}

// RegionOutcome is what ClusterMerger.Add did with a region snapshot.
type RegionOutcome uint8

const (
	// RegionApplied: the region's newest snapshot, now its latest.
	RegionApplied RegionOutcome = iota + 1
	// RegionHeld: newer, but its counters were below the latest's (a region
	// shard that lost its state): the gauges and histogram are taken, the
	// counters held, so the cluster's never go down.
	RegionHeld
	// RegionNewLife: newer, its counters below the latest's, which had no
	// live instance: the region was forgotten and came back. The latest's
	// counters stay counted; the new ones count in full.
	RegionNewLife
	// RegionOld: not newer than the region's latest; ignored.
	RegionOld
	// RegionRejected: not a region snapshot, or a region beyond MaxRegions.
	RegionRejected
)

var regionOutcomeNames = [...]string{"", "applied", "held", "new_life", "old", "rejected"}

// String is the outcome's metric label.
func (o RegionOutcome) String() string {
	if int(o) < len(regionOutcomeNames) && o != 0 {
		return regionOutcomeNames[o]
	}
	return "unknown"
}

// NewClusterMerger returns an empty ClusterMerger. Of cfg it reads
// AvgWindow (which must be the region shards'), StaleAfter (how long a
// region's gauges count after its latest snapshot arrived; default
// MinStaleAfter) and MaxRegions.
func NewClusterMerger(cfg MergerConfig) *ClusterMerger {
	cfg = cfg.withDefaults()
	width := int64((cfg.AvgWindow + time.Second - 1) / time.Second)
	return &ClusterMerger{
		cfg:        cfg,
		width:      width,
		staleAfter: cmp.Or(cfg.StaleAfter, MinStaleAfter),
		regions:    make(map[string]*regionPart),
		win:        newWindow(width, 0, 0),
	}
}

// Add takes region snapshot s, received at now (the merger's clock). Its
// histogram counts in the next tick (added at once; no reference is kept).
func (m *ClusterMerger) Add(s *proto.Snapshot, now time.Time) RegionOutcome {
	if s.Scope.Kind != proto.ScopeRegion || proto.ValidateToken("region", s.Scope.Name) != nil || s.Validate() != nil {
		return RegionRejected
	}
	p := m.regions[s.Scope.Name]
	if p == nil {
		if len(m.regionsBy) >= m.cfg.MaxRegions {
			return RegionRejected
		}
		p = m.part(s.Scope.Name)
	} else if s.Time.Unix() <= p.sec {
		return RegionOld
	}
	out := RegionApplied
	t := Totals{
		RequestsTotal: s.RequestsTotal, RequestsSuccess: s.RequestsSuccess, RequestsError: s.RequestsError,
		DurationSumNanos: s.DurationSumNanos, DurationCount: s.DurationCount,
	}
	c := &p.totals
	switch {
	case !(t.RequestsTotal < c.RequestsTotal || t.RequestsSuccess < c.RequestsSuccess ||
		t.RequestsError < c.RequestsError || t.DurationCount < c.DurationCount):
		p.totals = t
	case p.instances == 0:
		out = RegionNewLife
		m.retired = m.retired.add(p.totals)
		p.totals = t
	default:
		out = RegionHeld
		m.held++
	}
	p.sec, p.active, p.instances, p.seen = s.Time.Unix(), s.ActiveConnections, s.Instances, now
	if s.LatencyHistogram != nil && len(s.LatencyHistogram.Buckets) > 0 {
		m.lat.add(s.LatencyHistogram, m.width)
	}
	return out
}

func (m *ClusterMerger) part(name string) *regionPart {
	p := &regionPart{name: name, sec: noMinute}
	m.regions[name] = p
	i, _ := slices.BinarySearchFunc(m.regionsBy, name, func(e *regionPart, name string) int { return cmp.Compare(e.name, name) })
	m.regionsBy = slices.Insert(m.regionsBy, i, p)
	return p
}

// Complete reports whether the cluster snapshot of now's second can be
// computed with nothing more to wait for: every region seen within
// StaleAfter has published that second (or a later one), and at least one
// region did.
func (m *ClusterMerger) Complete(now time.Time) bool {
	sec := now.Unix()
	some := false
	for _, p := range m.regionsBy {
		if !m.live(p, now) {
			continue
		}
		if p.sec < sec {
			return false
		}
		some = true
	}
	return some
}

func (m *ClusterMerger) live(p *regionPart, now time.Time) bool {
	return !p.seen.IsZero() && now.Sub(p.seen) <= m.staleAfter
}

// Regions is the number of regions held.
func (m *ClusterMerger) Regions() int { return len(m.regionsBy) }

// Held counts the region snapshots whose counters were held (RegionHeld).
func (m *ClusterMerger) Held() uint64 { return m.held }

// AppendSnapshots appends the cluster snapshot at now (its second, in UTC)
// to dst, computed from every region's latest snapshot: counters of all
// regions, gauges of the regions whose latest arrived within StaleAfter.
// Like Merger.AppendSnapshots it advances the window; a second call in the
// same second refines that second's sample.
func (m *ClusterMerger) AppendSnapshots(dst []proto.Snapshot, now time.Time) []proto.Snapshot {
	t := now.UTC().Truncate(time.Second)
	sec := t.Unix()
	m.tick = max(m.tick, sec)
	sc := scopeState{totals: m.retired}
	for _, p := range m.regionsBy {
		sc.totals = sc.totals.add(p.totals)
		if m.live(p, now) {
			sc.live += p.instances
			sc.active = addSat(sc.active, p.active)
		}
	}
	avg := m.win.observe(sec, sc.totals.DurationSumNanos, sc.totals.DurationCount, m.width)
	s := snapshotOf(proto.ClusterScope(), t, &sc, avg)
	s.LatencyHistogram = m.lat.tick(sec, m.width, &s.LatencyMs)
	if s.Validate() != nil {
		m.invalid++
		return dst
	}
	return append(dst, s)
}

// State returns the cluster tier's persisted state in the Merger's State
// form: the cluster's totals (those of the regions plus what their earlier
// lives counted) and window, and per region its latest counters with the
// second they are of (as LastReport); no instances.
// A few hundred bytes per region.
func (m *ClusterMerger) State() State {
	s := State{Version: StateVersion, Tick: m.tick, Totals: m.retired, Window: m.win.samples(), Regions: make([]RegionState, 0, len(m.regionsBy)), Instances: []InstanceState{}}
	for _, p := range m.regionsBy {
		s.Totals = s.Totals.add(p.totals)
		s.Regions = append(s.Regions, RegionState{Region: p.name, Totals: p.totals, LastReport: time.Unix(p.sec, 0).UTC()})
	}
	return s
}

// Restore merges a persisted State into the merger: each region keeps the
// newer of its own latest and the persisted one, so a hot follower that
// takes over loses nothing it received, and a cluster tier restarted while
// a region shard is down still counts that region. The window is restored
// only when the merger has not ticked yet; a hot follower's own window and
// latency ticks are the leader's. Restored regions count in no gauge until
// their next snapshot. On error the merger is unchanged.
func (m *ClusterMerger) Restore(s State) error {
	if err := validateState(&s); err != nil {
		return err
	}
	if len(s.Instances) > 0 {
		return fmt.Errorf("restore cluster tier state: %d instances: not a cluster tier's state: %w", len(s.Instances), ErrInvalidState)
	}
	var sum Totals
	for _, r := range s.Regions {
		sum = sum.add(r.Totals)
	}
	retired := s.Totals.sub(sum)
	if sum.RequestsTotal > s.Totals.RequestsTotal || sum.RequestsSuccess > s.Totals.RequestsSuccess ||
		sum.RequestsError > s.Totals.RequestsError || sum.DurationCount > s.Totals.DurationCount || !retired.consistent() {
		return fmt.Errorf("restore cluster tier state: totals are below the sum of the regions': %w", ErrInvalidState)
	}
	if retired.RequestsTotal > m.retired.RequestsTotal {
		m.retired = retired
	}
	for _, r := range s.Regions {
		p := m.regions[r.Region]
		if p == nil {
			p = m.part(r.Region)
		}
		if sec := r.LastReport.Unix(); sec > p.sec && r.Totals.RequestsTotal >= p.totals.RequestsTotal {
			p.sec, p.totals = sec, r.Totals
		}
	}
	if m.tick == 0 {
		m.win = restoreWindow(m.width, s.Window, s.Totals.DurationSumNanos, s.Totals.DurationCount)
	}
	m.tick = max(m.tick, s.Tick)
	return nil
}
