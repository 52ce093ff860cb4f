package aggregator

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Merger defaults.
const (
	// DefaultAvgWindow is the span avg_response_time averages over.
	DefaultAvgWindow = 10 * time.Second
	// DefaultForgetAfter is how long an instance's state is kept after its
	// last report.
	DefaultForgetAfter = 24 * time.Hour
	// MinStaleAfter is the floor of the per-instance staleness default.
	MinStaleAfter = 3 * time.Second
	// staleIntervals is how many missed publish intervals make an instance
	// stale by default.
	staleIntervals = 3
)

// MergerConfig configures a Merger. Zero fields take the defaults.
type MergerConfig struct {
	// StaleAfter is how long after its last report an instance stops counting
	// in the gauges (active_connections, Instances) of every scope. Its
	// counted requests stay counted. Default: per instance, 3 × the publish
	// interval the instance itself reports, but at least 3s, so a gateway
	// publishing every 10s is not dropped between two reports while one
	// publishing every second is dropped after three missed reports.
	StaleAfter time.Duration
	// AvgWindow is the span of the sliding window that avg_response_time is
	// computed over: Σduration/Σcount of the requests counted in the last
	// AvgWindow, 0 when none were. It is rounded up to whole seconds (the
	// tick). Default 10s: long enough that one slow request on an idle
	// cluster does not make the figure jump about every second, short enough
	// that a latency regression shows within seconds.
	AvgWindow time.Duration
	// ForgetAfter is how long an instance's state (boot, sequence, counters,
	// offsets) is kept after its last report; then the instance and its
	// instance scope disappear. A region is forgotten once it has no
	// instances and no report for ForgetAfter. Cluster and region totals keep
	// what forgotten instances counted. An instance that reports again after
	// being forgotten is a new instance: its current boot's counts are added
	// again in full, so the counts it made before it was forgotten are
	// counted twice in the cluster and region totals, and its instance
	// scope's counters restart from its raw counters. ForgetAfter must
	// therefore be longer than any partition the totals must survive
	// exactly. Default 24h.
	ForgetAfter time.Duration
	// MaxRequestRate bounds how fast an instance's request counters may
	// grow (see DefaultMaxRequestRate, plausible.go); a report beyond it is
	// rejected and changes nothing.
	MaxRequestRate int64
	// RecoverAfter is how long an instance whose sequence number jumped
	// must keep to the jump before it is accepted. Default
	// DefaultRecoverAfter.
	RecoverAfter time.Duration
	// MaxInstances and MaxRegions cap the instances and regions tracked,
	// so that one publisher cannot grow memory, history or subjects without
	// bound. Defaults DefaultMaxInstances and DefaultMaxRegions.
	MaxInstances int
	MaxRegions   int
}

// Validate rejects negative values; zero ones take the defaults.
func (c MergerConfig) Validate() error {
	return service.First(
		service.NonNegative("StaleAfter", c.StaleAfter),
		service.NonNegative("AvgWindow", c.AvgWindow),
		service.NonNegative("ForgetAfter", c.ForgetAfter),
		service.NonNegative("MaxRequestRate", c.MaxRequestRate),
		service.NonNegative("RecoverAfter", c.RecoverAfter),
		service.NonNegative("MaxInstances", c.MaxInstances),
		service.NonNegative("MaxRegions", c.MaxRegions),
	)
}

func (c MergerConfig) withDefaults() MergerConfig {
	if c.MaxRequestRate <= 0 {
		c.MaxRequestRate = DefaultMaxRequestRate
	}
	if c.RecoverAfter <= 0 {
		c.RecoverAfter = DefaultRecoverAfter
	}
	if c.MaxInstances <= 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.MaxRegions <= 0 {
		c.MaxRegions = DefaultMaxRegions
	}
	if c.AvgWindow <= 0 {
		c.AvgWindow = DefaultAvgWindow
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	return c
}

// Outcome is what Apply did with a report.
type Outcome uint8

const (
	// OutcomeApplied: the next report of a known instance and boot.
	OutcomeApplied Outcome = iota + 1
	// OutcomeNewInstance: the first report of an instance.
	OutcomeNewInstance
	// OutcomeDuplicate: a report of the current boot with a sequence number
	// not above the last applied one, or a late report of the previous boot.
	// Reports are cumulative, so ignoring it loses nothing.
	OutcomeDuplicate
	// OutcomeResetBoot: a new boot id; the counters restarted from zero.
	OutcomeResetBoot
	// OutcomeResetDecrease: same boot id, but a cumulative counter went down;
	// treated as a restart of the counters.
	OutcomeResetDecrease
	// OutcomeRejected: an invalid or implausible report, or one beyond a
	// cap; LastRejection says why. Nothing changed.
	OutcomeRejected
)

var outcomeNames = [...]string{"", "applied", "new_instance", "duplicate", "reset_boot", "reset_decrease", "rejected"}

// String names the outcome, for logs.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return "unknown"
}

// Totals are a scope's cumulative counters.
type Totals struct {
	RequestsTotal   uint64 `json:"requests_total"`
	RequestsSuccess uint64 `json:"requests_success"`
	RequestsError   uint64 `json:"requests_error"`
	// DurationSumNanos is summed modulo 2^64, here and in the reports it
	// comes from: at high volume a cumulative sum wraps (a cluster's within
	// months, a busy gateway's within a year), and differences taken with
	// unsigned subtraction stay right across the wrap. It is never compared
	// with < or >, only subtracted.
	DurationSumNanos uint64 `json:"duration_sum_ns"`
	DurationCount    uint64 `json:"duration_count"`
}

func totalsOf(c *proto.Counters) Totals {
	return Totals{
		RequestsTotal:    c.RequestsTotal,
		RequestsSuccess:  c.RequestsSuccess,
		RequestsError:    c.RequestsError,
		DurationSumNanos: c.DurationSumNanos,
		DurationCount:    c.DurationCount,
	}
}

func (t Totals) add(u Totals) Totals {
	return Totals{
		RequestsTotal:    t.RequestsTotal + u.RequestsTotal,
		RequestsSuccess:  t.RequestsSuccess + u.RequestsSuccess,
		RequestsError:    t.RequestsError + u.RequestsError,
		DurationSumNanos: t.DurationSumNanos + u.DurationSumNanos,
		DurationCount:    t.DurationCount + u.DurationCount,
	}
}

// sub is t − u field by field. Callers only subtract smaller request
// counters; the duration sum is subtracted modulo 2^64 like it is added.
func (t Totals) sub(u Totals) Totals {
	return Totals{
		RequestsTotal:    t.RequestsTotal - u.RequestsTotal,
		RequestsSuccess:  t.RequestsSuccess - u.RequestsSuccess,
		RequestsError:    t.RequestsError - u.RequestsError,
		DurationSumNanos: t.DurationSumNanos - u.DurationSumNanos,
		DurationCount:    t.DurationCount - u.DurationCount,
	}
}

// consistent reports whether success + error == total without overflow.
func (t Totals) consistent() bool {
	return t.RequestsSuccess <= t.RequestsTotal && t.RequestsTotal-t.RequestsSuccess == t.RequestsError
}

// scopeState is what the cluster and each region keep: totals that only grow
// (deltas are added, never recomputed, so an instance that moves or is
// forgotten leaves its counts behind) and the window ring.
type scopeState struct {
	totals Totals
	win    window
	lat    runLat
	// Gauges of the tick being computed; scratch, rebuilt every tick.
	live   int
	active int64
}

type regionState struct {
	name string
	scopeState
	members  int       // instances currently in this region
	lastSeen time.Time // last report applied to an instance in it
}

type instState struct {
	name     string
	region   *regionState
	boot     string
	prevBoot string // the boot before this one: its late reports are duplicates
	seq      uint64
	start    time.Time
	lastSeen time.Time // the merger's clock when the last report was applied
	interval time.Duration
	final    bool
	raw      Totals // the current boot's counters as last reported
	buckets  [proto.NumLatencyBuckets]uint64
	active   int64
	offsets  Totals // what earlier boots (and counter resets) of this instance counted
	win      window
	// hist is the current boot's cumulative latency histogram as last
	// reported; histKnown is false while the instance's reports carry none
	// (a build before it) or before the first one.
	hist      proto.Histogram
	histKnown bool
	histSeq   uint64 // the seq of the report hist came from
	lat       latWindow
	up        bool     // scratch: live at the tick being computed
	suspect   *suspect // a sequence jump being followed (plausible.go); not persisted
}

// contribution is everything the instance has counted while tracked.
func (in *instState) contribution() Totals { return in.offsets.add(in.raw) }

// Merger merges cumulative per-instance reports into per-scope snapshots.
//
// A Merger is not safe for concurrent use: it belongs to one aggregator loop,
// which serialises Apply, Snapshots and the accessors (the Aggregator does so
// with a mutex).
//
// Cluster and region request counters are sums of per-report deltas, so they
// never decrease: not when a gateway restarts (new boot id, or a counter that
// went down), not when an instance goes stale, is forgotten, or moves to
// another region. An instance that comes back with the same boot id after a
// partition adds exactly what it counted meanwhile.
type Merger struct {
	cfg     MergerConfig
	width   int64 // AvgWindow in whole seconds
	cluster scopeState

	regions   map[string]*regionState
	regionsBy []*regionState // sorted by name
	insts     map[string]*instState
	instsBy   []*instState // sorted by name

	invalid uint64 // snapshots that failed validation and were left out
	tick    int64  // unix second of the newest tick; 0 before the first
	reject  Reject // why the last rejected report was rejected

	scratch proto.DenseHist    // merges latency histograms at each tick
	unpack  []proto.HistBucket // unpacks instances' tick histograms
}

// NewMerger returns an empty Merger.
func NewMerger(cfg MergerConfig) *Merger {
	cfg = cfg.withDefaults()
	width := int64((cfg.AvgWindow + time.Second - 1) / time.Second)
	return &Merger{
		cfg:     cfg,
		width:   width,
		cluster: scopeState{win: newWindow(width, 0, 0)},
		regions: make(map[string]*regionState),
		insts:   make(map[string]*instState),
	}
}

// Len is the number of tracked instances, live or stale.
func (m *Merger) Len() int { return len(m.instsBy) }

// InvalidSnapshots counts snapshots left out of Snapshots because they failed
// proto validation. The merge keeps the snapshot invariants by construction,
// so anything but 0 is a bug.
func (m *Merger) InvalidSnapshots() uint64 { return m.invalid }

// Apply merges one report received at now (the merger's clock, which judges
// staleness; the report's own Time is not trusted across hosts).
//
// A known instance reporting a different region is moved: from then on its
// deltas count in the new region, while the old region keeps what the
// instance counted there, so neither region's counters go down.
func (m *Merger) Apply(r proto.Report, now time.Time) Outcome {
	if r.Validate() != nil {
		m.reject = RejectInvalid
		return OutcomeRejected
	}
	if why := m.admit(&r, now); why != RejectNone {
		m.reject = why
		return OutcomeRejected
	}
	raw := totalsOf(&r.Counters)
	in, known := m.insts[r.Instance]
	if !known {
		if !m.fits(raw) {
			m.reject = RejectOverflow
			return OutcomeRejected
		}
		in = &instState{name: r.Instance, win: newWindow(m.width, 0, 0)}
		m.insts[in.name] = in
		i, _ := slices.BinarySearchFunc(m.instsBy, in.name, func(e *instState, name string) int { return cmp.Compare(e.name, name) })
		m.instsBy = slices.Insert(m.instsBy, i, in)
		in.region = m.region(r.Region)
		in.region.members++
		m.record(in, &r, raw, raw, now)
		m.recordLatency(in, r.LatencyHistogram, r.Seq, true)
		return OutcomeNewInstance
	}

	var out Outcome
	delta := raw
	switch {
	case r.BootID == in.boot:
		if r.Seq <= in.seq {
			return OutcomeDuplicate
		}
		if decreased(in, raw, r.LatencyBuckets) {
			out = OutcomeResetDecrease
		} else {
			out = OutcomeApplied
			delta = raw.sub(in.raw)
		}
	case r.BootID == in.prevBoot:
		return OutcomeDuplicate
	default:
		out = OutcomeResetBoot
	}
	if !m.fits(delta) {
		m.reject = RejectOverflow
		return OutcomeRejected
	}
	if out != OutcomeApplied {
		// The counters restarted: what the previous run counted becomes part
		// of the offsets, and the new raw counters count in full.
		in.offsets = in.offsets.add(in.raw)
		if out == OutcomeResetBoot {
			in.prevBoot = in.boot
		}
	}
	if in.region.name != r.Region {
		in.region.members--
		in.region = m.region(r.Region)
		in.region.members++
	}
	m.record(in, &r, raw, delta, now)
	m.recordLatency(in, r.LatencyHistogram, r.Seq, out != OutcomeApplied)
	return out
}

// LastRejection is why the last report that Apply rejected was rejected.
func (m *Merger) LastRejection() Reject { return m.reject }

// fits reports whether adding delta keeps the cluster's request counters
// (the largest of all scopes) below 2^64.
func (m *Merger) fits(delta Totals) bool {
	return m.cluster.totals.RequestsTotal+delta.RequestsTotal >= m.cluster.totals.RequestsTotal
}

// decreased reports whether any cumulative counter of the report is below
// the last one of the same boot. The duration sum is not among them: it is
// kept modulo 2^64 everywhere (a gateway with a thousand requests in flight
// adds 1000 s of latency per second and wraps it within a year), so a smaller
// sum is a wrap, not a reset; the delta taken by unsigned subtraction is
// right across it. A real reset also lowers the request counts and the
// duration count, which are checked.
func decreased(in *instState, raw Totals, buckets []uint64) bool {
	if raw.RequestsTotal < in.raw.RequestsTotal || raw.RequestsSuccess < in.raw.RequestsSuccess ||
		raw.RequestsError < in.raw.RequestsError || raw.DurationCount < in.raw.DurationCount {
		return true
	}
	for i, b := range buckets {
		if b < in.buckets[i] {
			return true
		}
	}
	return false
}

// record stores the report as the instance's latest and adds delta to the
// cluster and the instance's region.
func (m *Merger) record(in *instState, r *proto.Report, raw, delta Totals, now time.Time) {
	in.boot = r.BootID
	in.seq = r.Seq
	in.start = r.StartTime
	in.lastSeen = now
	in.interval = r.Interval
	in.final = r.Final
	in.raw = raw
	copy(in.buckets[:], r.LatencyBuckets)
	in.active = r.ActiveConnections
	in.region.lastSeen = now
	in.region.totals = in.region.totals.add(delta)
	m.cluster.totals = m.cluster.totals.add(delta)
}

// region returns the named region, creating it.
func (m *Merger) region(name string) *regionState {
	if rg, ok := m.regions[name]; ok {
		return rg
	}
	rg := &regionState{name: name, scopeState: scopeState{win: newWindow(m.width, 0, 0)}}
	m.regions[name] = rg
	i, _ := slices.BinarySearchFunc(m.regionsBy, name, func(e *regionState, name string) int { return cmp.Compare(e.name, name) })
	m.regionsBy = slices.Insert(m.regionsBy, i, rg)
	return rg
}

// staleAfter is how long the instance stays live after its last report.
func (m *Merger) staleAfter(in *instState) time.Duration {
	if m.cfg.StaleAfter > 0 {
		return m.cfg.StaleAfter
	}
	if in.interval > math.MaxInt64/staleIntervals {
		return math.MaxInt64
	}
	return max(staleIntervals*in.interval, MinStaleAfter)
}

// live reports whether the instance counts in the gauges at now.
func (m *Merger) live(in *instState, now time.Time) bool {
	return !in.final && now.Sub(in.lastSeen) <= m.staleAfter(in)
}

// forget drops instances silent for ForgetAfter, then regions left without
// instances and silent as long. Totals keep what they counted.
func (m *Merger) forget(now time.Time) {
	dropped := false
	for _, in := range m.instsBy {
		if now.Sub(in.lastSeen) > m.cfg.ForgetAfter {
			delete(m.insts, in.name)
			in.region.members--
			dropped = true
		}
	}
	if !dropped {
		return
	}
	m.instsBy = slices.DeleteFunc(m.instsBy, func(in *instState) bool { return m.insts[in.name] != in })
	m.regionsBy = slices.DeleteFunc(m.regionsBy, func(rg *regionState) bool {
		if rg.members == 0 && now.Sub(rg.lastSeen) > m.cfg.ForgetAfter {
			delete(m.regions, rg.name)
			return true
		}
		return false
	})
}

// Snapshots returns one snapshot per scope at now: the cluster (always, even
// with no instances), every region and every instance still tracked, in that
// order, regions and instances sorted by name. Time is now truncated to the
// second in UTC. Stale instances keep their counted requests in every scope
// but add nothing to the gauges.
//
// Snapshots advances state: it records the tick in each scope's window and
// forgets instances and regions silent for ForgetAfter. Call it once per
// tick; a second call in the same second refines that second's sample.
func (m *Merger) Snapshots(now time.Time) []proto.Snapshot {
	return m.AppendSnapshots(make([]proto.Snapshot, 0, 1+len(m.regionsBy)+len(m.instsBy)), now)
}

// AppendSnapshots is Snapshots appending to dst, so that a caller ticking
// every second reuses one buffer.
func (m *Merger) AppendSnapshots(dst []proto.Snapshot, now time.Time) []proto.Snapshot {
	return m.AppendSnapshotsFor(dst, now, nil)
}

// AppendSnapshotsFor is AppendSnapshots computing the latency quantiles of
// an instance's window only where wanted(name) says so (every instance when
// wanted is nil): the snapshots of the other instances carry zero quantiles
// and must not be published, but everything else in them — counters,
// gauges, avg_response_time and the tick's histogram — is exact, which is
// all a rollup reads. Their windows are kept up all the same, so the
// quantiles are right from the first tick an instance is wanted.
func (m *Merger) AppendSnapshotsFor(dst []proto.Snapshot, now time.Time, wanted func(name string) bool) []proto.Snapshot {
	m.forget(now)
	t := now.UTC().Truncate(time.Second)
	sec := t.Unix()
	m.tick = max(m.tick, sec)

	m.cluster.live, m.cluster.active = 0, 0
	for _, rg := range m.regionsBy {
		rg.live, rg.active = 0, 0
	}
	for _, in := range m.instsBy {
		in.up = m.live(in, now)
		if in.up {
			m.cluster.live++
			m.cluster.active = addSat(m.cluster.active, in.active)
			in.region.live++
			in.region.active = addSat(in.region.active, in.active)
		}
	}

	dst = m.appendSnapshot(dst, proto.ClusterScope(), t, sec, &m.cluster)
	for _, rg := range m.regionsBy {
		dst = m.appendSnapshot(dst, proto.RegionScope(rg.name), t, sec, &rg.scopeState)
	}
	for _, in := range m.instsBy {
		sc := scopeState{totals: in.contribution()}
		if in.up {
			sc.live, sc.active = 1, in.active
		}
		avg := in.win.observe(sec, sc.totals.DurationSumNanos, sc.totals.DurationCount, m.width)
		s := snapshotOf(proto.InstanceScope(in.name), t, &sc, avg)
		s.LatencyHistogram = in.lat.tick(sec, &m.scratch, &m.unpack)
		if in.lat.n > 0 && (wanted == nil || wanted(in.name)) {
			in.lat.quantiles(sec, m.width, &m.scratch, &m.unpack, &s.LatencyMs)
		}
		dst = m.appendValid(dst, s)
	}
	return dst
}

func (m *Merger) appendSnapshot(dst []proto.Snapshot, scope proto.Scope, t time.Time, sec int64, sc *scopeState) []proto.Snapshot {
	avg := sc.win.observe(sec, sc.totals.DurationSumNanos, sc.totals.DurationCount, m.width)
	s := snapshotOf(scope, t, sc, avg)
	s.LatencyHistogram = sc.lat.tick(sec, m.width, &s.LatencyMs)
	return m.appendValid(dst, s)
}

func (m *Merger) appendValid(dst []proto.Snapshot, s proto.Snapshot) []proto.Snapshot {
	if s.Validate() != nil {
		m.invalid++
		return dst
	}
	return append(dst, s)
}

func snapshotOf(scope proto.Scope, t time.Time, sc *scopeState, avg float64) proto.Snapshot {
	return proto.Snapshot{
		Version:           proto.SnapshotVersion,
		Scope:             scope,
		Time:              t,
		RequestsTotal:     sc.totals.RequestsTotal,
		RequestsSuccess:   sc.totals.RequestsSuccess,
		RequestsError:     sc.totals.RequestsError,
		ActiveConnections: sc.active,
		AvgResponseTimeMs: avg,
		SuccessRate:       proto.SuccessRateOf(sc.totals.RequestsSuccess, sc.totals.RequestsTotal),
		DurationSumNanos:  sc.totals.DurationSumNanos,
		DurationCount:     sc.totals.DurationCount,
		Instances:         sc.live,
	}
}

// addSat adds two non-negative gauges, saturating instead of wrapping
// negative.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// InstanceStatus is one tracked instance as Prometheus sees it: the raw
// counters of its current boot (so that rate() handles restarts the usual
// way), its latency buckets and its liveness.
type InstanceStatus struct {
	Instance string
	Region   string
	BootID   string
	// Counters are the current boot's cumulative counters as last reported.
	Counters Totals
	// LatencyBuckets are per-bucket (not cumulative) counts over
	// proto.LatencyBounds, the last one being +Inf.
	LatencyBuckets [proto.NumLatencyBuckets]uint64
	// LatencyHistogram is the current boot's high-resolution histogram, nil
	// when the instance's reports carry none; a copy.
	LatencyHistogram  *proto.Histogram
	ActiveConnections int64
	// Up is whether the instance is live: reported within its staleness
	// limit and not shut down (Final).
	Up bool
	// LastReport is when its last report was applied, on the merger's clock.
	LastReport time.Time
	// StartTime is when its current boot started, as it reported.
	StartTime time.Time
}

// AppendInstanceStatus appends the status of every tracked instance at now,
// sorted by instance name.
func (m *Merger) AppendInstanceStatus(dst []InstanceStatus, now time.Time) []InstanceStatus {
	for _, in := range m.instsBy {
		var hist *proto.Histogram
		if in.histKnown {
			h := in.hist.Clone() // the merger reuses its array
			hist = &h
		}
		dst = append(dst, InstanceStatus{
			LatencyHistogram:  hist,
			Instance:          in.name,
			Region:            in.region.name,
			BootID:            in.boot,
			Counters:          in.raw,
			LatencyBuckets:    in.buckets,
			ActiveConnections: in.active,
			Up:                m.live(in, now),
			LastReport:        in.lastSeen,
			StartTime:         in.start,
		})
	}
	return dst
}

// staleBoot reports whether r comes from a boot older than the instance's
// previous one: neither its current nor its previous boot, and started
// before the current one (both start times come from the instance's own
// clock). Apply would take such a report for a restart and count its boot a
// second time; the failover replay skips it instead.
func (m *Merger) staleBoot(r *proto.Report) bool {
	in, ok := m.insts[r.Instance]
	return ok && r.BootID != in.boot && r.BootID != in.prevBoot && r.StartTime.Before(in.start)
}
