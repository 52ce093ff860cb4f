package benchmark

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// ModeResult is what one mode measured. Its JSON names are the report's
// keys (prefixed "baseline_" and "raw_" for those modes).
type ModeResult struct {
	Mode           Mode    `json:"-"`
	Connected      int     `json:"connected"`
	ConnectSeconds float64 `json:"connect_seconds"`

	// Memory with every subscriber connected and idle, after GC, minus the
	// same after the warm-up (memory.go), per subscriber: the marginal
	// cost of an idle subscriber.
	BytesPerIdleSubscriber float64 `json:"bytes_per_idle_subscriber"` // VmRSS
	// ColdBytesPerIdleSubscriber is over the RSS before any connection
	// instead: the marginal cost plus FixedBytes spread over the
	// subscribers (so it shrinks as they grow).
	ColdBytesPerIdleSubscriber float64 `json:"cold_bytes_per_idle_subscriber"`
	// FileBytesPerIdleSubscriber is the part of BytesPerIdleSubscriber in
	// RssFile: pages of the binary first touched after the warm-up.
	FileBytesPerIdleSubscriber float64 `json:"file_bytes_per_idle_subscriber"`
	// WarmupSubscribers connected and left before the warm sample;
	// FixedBytes (FixedFileBytes of it the binary's pages) is the RSS they
	// left behind: the one-off cost of the first connections.
	WarmupSubscribers int   `json:"warmup_subscribers"`
	FixedBytes        int64 `json:"fixed_bytes"`
	FixedFileBytes    int64 `json:"fixed_file_bytes"`
	FixedAnonBytes    int64 `json:"fixed_anon_bytes"`
	ColdThreads       int   `json:"cold_threads"`
	WarmThreads       int   `json:"warm_threads"`
	// ColdMem and WarmMem are the runtime's classes at those samples.
	ColdMem memClasses `json:"cold_mem"`
	WarmMem memClasses `json:"warm_mem"`
	// Memory is the idle memory at each point of the sweep, the last one
	// with every subscriber (the figures above).
	Memory                     []MemoryPoint `json:"memory_points"`
	HeapBytesPerIdleSubscriber float64       `json:"heap_bytes_per_idle_subscriber"` // live objects
	// HeapInuseBytesPerIdleSubscriber counts the heap spans the objects
	// occupy, so fragmentation too; RuntimeBytesPerIdleSubscriber the
	// runtime's own structures (netpoll descriptors, span metadata, GC
	// bitmaps).
	HeapInuseBytesPerIdleSubscriber float64 `json:"heap_inuse_bytes_per_idle_subscriber"`
	RuntimeBytesPerIdleSubscriber   float64 `json:"runtime_bytes_per_idle_subscriber"`
	StackBytesPerIdleSubscriber     float64 `json:"stack_bytes_per_idle_subscriber"`
	GoroutinesPerSubscriber         float64 `json:"goroutines_per_subscriber"`
	RSSBytesBefore                  uint64  `json:"rss_bytes_before"`
	RSSBytesIdle                    uint64  `json:"rss_bytes_idle"`

	// The steady window, from the server's own figures.
	WindowSeconds        float64 `json:"window_seconds"`
	Deliveries           uint64  `json:"deliveries"` // Snapshot frames written
	DeliveriesPerSecond  float64 `json:"deliveries_per_second"`
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	// SystemCPUShare is the kernel's part of CPUSeconds (the writes).
	SystemCPUShare float64 `json:"system_cpu_share"`
	// DeliveriesPerCore is 1 s / CPUMicrosPerDelivery: what one core
	// could sustain at this cost.
	DeliveriesPerCore float64 `json:"deliveries_per_core_second"`
	// FixedCPUCores is the server's CPU use with no subscriber (NATS, the
	// stub, idle timers); it is part of CPUSeconds too.
	FixedCPUCores             float64 `json:"fixed_cpu_cores"`
	AllocsPerDelivery         float64 `json:"allocs_per_delivery"`
	MarginalAllocsPerDelivery float64 `json:"marginal_allocs_per_delivery"` // the idle rate subtracted
	GCCycles                  uint32  `json:"gc_cycles"`
	Conflations               uint64  `json:"conflations"`
	Dropped                   uint64  `json:"dropped_connections"`
	ClientCPUCores            float64 `json:"client_cpu_cores"`
	OtherCPUCores             float64 `json:"other_cpu_cores"` // the rest of the machine meanwhile
	// StolenCPUCores is the time the hypervisor ran something else while
	// this machine's vCPUs wanted to run (steal in /proc/stat): a stolen
	// core shows up as latency that no code here can remove.
	StolenCPUCores float64 `json:"stolen_cpu_cores"`

	// The client's account of the ticks in its window.
	TickWindowSeconds float64 `json:"tick_window_seconds"`
	DeliveriesDue     uint64  `json:"deliveries_due"`
	DeliveriesMade    uint64  `json:"deliveries_made"`
	Duplicates        uint64  `json:"duplicates"`
	ClosedByServer    uint64  `json:"closed_by_server"`
	TickToWireMinMs   float64 `json:"tick_to_wire_min_ms"`
	TickToWireP50Ms   float64 `json:"tick_to_wire_p50_ms"`
	TickToWireP90Ms   float64 `json:"tick_to_wire_p90_ms"`
	TickToWireP99Ms   float64 `json:"tick_to_wire_p99_ms"`
	TickToWireP999Ms  float64 `json:"tick_to_wire_p999_ms"`
	TickToWireMaxMs   float64 `json:"tick_to_wire_max_ms"`
	SnapshotAgeP50Ms  float64 `json:"snapshot_age_p50_ms"`
	SnapshotAgeP99Ms  float64 `json:"snapshot_age_p99_ms"`
	SnapshotAgeMaxMs  float64 `json:"snapshot_age_max_ms"`
	// T0Error*: how much later than the true phase the client's t0 may
	// be; the true tick-to-wire is up to this much above the measured.
	T0ErrorP50Ms float64 `json:"t0_error_p50_ms"`
	T0ErrorP99Ms float64 `json:"t0_error_p99_ms"`
	T0ErrorMaxMs float64 `json:"t0_error_max_ms"`
	// The edge's own view (tick_lag_seconds: scheduled tick → written),
	// interpolated within its buckets; absent for the other modes.
	ServerTickLagP50Ms *float64 `json:"server_tick_lag_p50_ms,omitempty"`
	ServerTickLagP99Ms *float64 `json:"server_tick_lag_p99_ms,omitempty"`
	// ClientProblem is the first anomaly the client saw, if any.
	ClientProblem string `json:"client_problem,omitempty"`
	// SlowSnapshots is what the slow subscribers read in the window;
	// SlowClosed how many of them the server closed.
	SlowSnapshots uint64 `json:"slow_snapshots_received"`
	SlowClosed    uint64 `json:"slow_closed_by_server"`
	// Rounds are every round's key figures, in the order run, when there
	// was more than one; the other fields are the median round's.
	Rounds []RoundFigures `json:"round_figures,omitempty"`
	// WorstDelivery names the latest delivery of the window; ShortSubscriber
	// the first subscriber with fewer deliveries than ticks, if any.
	WorstDelivery   string `json:"worst_delivery,omitempty"`
	ShortSubscriber string `json:"short_subscriber,omitempty"`
}

// measurements are the raw readings of one mode.
type measurements struct {
	before, idle0, idle1, after, s0, s1 serverSample
	// warm is the sample after the warm-up (before without one); points
	// are the sweep's samples, after the last of them.
	warm    serverSample
	points  []serverSample
	warmups int
	conn    connectSummary
	client  clientReport
	machine machineCPU // over the window
}

func compute(mode Mode, m measurements) *ModeResult {
	n := float64(m.conn.Connected)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / n }
	window := time.Duration(m.s1.WallNanos - m.s0.WallNanos).Seconds()
	cpu := time.Duration(m.s1.CPUNanos - m.s0.CPUNanos).Seconds()
	deliveries := m.s1.Deliveries - m.s0.Deliveries
	idleWall := time.Duration(m.idle1.WallNanos - m.idle0.WallNanos).Seconds()
	idleCPU := time.Duration(m.idle1.CPUNanos - m.idle0.CPUNanos).Seconds()
	idleMallocRate := 0.0
	if idleWall > 0 {
		idleMallocRate = float64(m.idle1.Mallocs-m.idle0.Mallocs) / idleWall
	}
	mallocs := float64(m.s1.Mallocs - m.s0.Mallocs)
	r := &ModeResult{
		Mode: mode, Connected: m.conn.Connected, ConnectSeconds: m.conn.Seconds,

		BytesPerIdleSubscriber:          per(m.after.RSSBytes, m.warm.RSSBytes),
		ColdBytesPerIdleSubscriber:      per(m.after.RSSBytes, m.before.RSSBytes),
		FileBytesPerIdleSubscriber:      per(m.after.RSSFileBytes, m.warm.RSSFileBytes),
		HeapBytesPerIdleSubscriber:      per(m.after.HeapBytes, m.warm.HeapBytes),
		StackBytesPerIdleSubscriber:     per(m.after.StackBytes, m.warm.StackBytes),
		HeapInuseBytesPerIdleSubscriber: per(m.after.HeapInuse, m.warm.HeapInuse),
		RuntimeBytesPerIdleSubscriber:   per(m.after.RuntimeBytes, m.warm.RuntimeBytes),
		GoroutinesPerSubscriber:         (float64(m.after.Goroutines) - float64(m.warm.Goroutines)) / n,
		RSSBytesBefore:                  m.before.RSSBytes,
		RSSBytesIdle:                    m.after.RSSBytes,
		WarmupSubscribers:               m.warmups,
		FixedBytes:                      int64(m.warm.RSSBytes) - int64(m.before.RSSBytes),
		FixedFileBytes:                  int64(m.warm.RSSFileBytes) - int64(m.before.RSSFileBytes),
		FixedAnonBytes:                  int64(m.warm.RSSAnonBytes) - int64(m.before.RSSAnonBytes),
		ColdThreads:                     m.before.Mem.Threads,
		WarmThreads:                     m.warm.Mem.Threads,
		ColdMem:                         m.before.Mem,
		WarmMem:                         m.warm.Mem,

		WindowSeconds: window,
		Deliveries:    deliveries,
		CPUSeconds:    cpu,
		GCCycles:      m.s1.NumGC - m.s0.NumGC,
		Conflations:   m.s1.Conflations - m.s0.Conflations,
		Dropped:       m.s1.Dropped - m.s0.Dropped,

		TickWindowSeconds: m.client.WindowSeconds,
		DeliveriesDue:     m.client.Due,
		DeliveriesMade:    m.client.Made,
		Duplicates:        m.client.Duplicates,
		ClosedByServer:    m.client.ClosedByServer,
		TickToWireMinMs:   m.client.Lag.Min,
		TickToWireP50Ms:   m.client.Lag.P50,
		TickToWireP90Ms:   m.client.Lag.P90,
		TickToWireP99Ms:   m.client.Lag.P99,
		TickToWireP999Ms:  m.client.Lag.P999,
		TickToWireMaxMs:   m.client.Lag.Max,
		SnapshotAgeP50Ms:  m.client.Age.P50,
		SnapshotAgeP99Ms:  m.client.Age.P99,
		SnapshotAgeMaxMs:  m.client.Age.Max,
		T0ErrorP50Ms:      m.conn.T0Error.P50,
		T0ErrorP99Ms:      m.conn.T0Error.P99,
		T0ErrorMaxMs:      m.conn.T0Error.Max,
		ClientProblem:     m.client.FirstProblem,
		WorstDelivery:     m.client.Worst,
		ShortSubscriber:   m.client.Short,
		SlowSnapshots:     m.client.SlowSnapshots,
		SlowClosed:        m.client.SlowClosed,
	}
	prev := m.warm
	for _, p := range m.points {
		r.Memory = append(r.Memory, memoryPoint(int(p.Connections), m.before, m.warm, prev, p))
		prev = p
	}
	if idleWall > 0 {
		r.FixedCPUCores = idleCPU / idleWall
	}
	if window > 0 {
		r.DeliveriesPerSecond = float64(deliveries) / window
		r.OtherCPUCores = max(0, (m.machine.Busy.Seconds()-cpu-m.client.CPUSeconds)/window)
		r.StolenCPUCores = m.machine.Steal.Seconds() / window
	}
	if m.client.WindowSeconds > 0 {
		r.ClientCPUCores = m.client.CPUSeconds / (m.client.WindowSeconds + reportGrace.Seconds())
	}
	if cpu > 0 {
		r.SystemCPUShare = time.Duration(m.s1.SysNanos-m.s0.SysNanos).Seconds() / cpu
	}
	if deliveries > 0 {
		r.CPUMicrosPerDelivery = cpu * 1e6 / float64(deliveries)
		r.DeliveriesPerCore = float64(deliveries) / cpu
		r.AllocsPerDelivery = mallocs / float64(deliveries)
		r.MarginalAllocsPerDelivery = max(0, mallocs-idleMallocRate*window) / float64(deliveries)
	}
	if q, ok := quantileBetween(m.s0.TickLag, m.s1.TickLag, 0.50); ok {
		v := q * 1000
		r.ServerTickLagP50Ms = &v
	}
	if q, ok := quantileBetween(m.s0.TickLag, m.s1.TickLag, 0.99); ok {
		v := q * 1000
		r.ServerTickLagP99Ms = &v
	}
	return r
}

// Report is the outcome of Run: the three modes side by side, their
// ratios and the targets.
type Report struct {
	Subscribers     int
	Intervals       Intervals
	DurationSeconds float64
	Cores           int
	// ClientPollSeconds is Config.ClientPoll (0: the client blocks in
	// epoll_wait).
	ClientPollSeconds float64
	// Rounds is Config.Rounds.
	Rounds int
	// Slow is Config.Slow, SlowStallSeconds Config.SlowStall.
	Slow             int
	SlowStallSeconds float64
	// Network is where the modes ran: NetworkNamespace or NetworkHost;
	// NetworkNote says why the host's when NetworkAuto could not isolate.
	Network     Network
	NetworkNote string
	// Edge, Baseline (mode naive) and Raw are nil for modes not run.
	Edge, Baseline, Raw *ModeResult
	// Ratios, NaN when a mode is missing.
	BaselineToEdgeMemory float64 // baseline bytes per idle subscriber ÷ edge's
	BaselineToEdgeCPU    float64 // baseline CPU per delivery ÷ edge's
	EdgeToRawCPU         float64 // edge CPU per delivery ÷ raw loop's
	Targets              []Target
}

// Target is one of the performance targets and whether it was met.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
	// Note qualifies the verdict (e.g. measured off the target's setting).
	Note string `json:"note,omitempty"`
}

// The targets.
const (
	TargetBytesPerIdleSubscriber = 512 // 0.5 KiB of user-space memory (issue 13)
	// TargetMemoryFlatness is what "flat from 5,000 to 20,000" is held
	// to: the sweep's largest figure per subscriber over its smallest.
	TargetMemoryFlatness    = 1.2
	TargetEdgeToRawCPU      = 1.15
	TargetDeliveriesPerCore = 100_000
	TargetTickToWireP99Ms   = 25
	TargetTickSubscribers   = 10_000
	// TargetMarginalAllocs is what "zero allocations per delivery" is held
	// to end to end: the server's allocations in the window, less its
	// allocation rate with no subscriber, per delivery. What remains of
	// the fixed rate (GC timing, NATS) is well below it.
	TargetMarginalAllocs = 0.01
)

// RoundFigures are one round's key figures, listed when Config.Rounds > 1.
type RoundFigures struct {
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	TickToWireP99Ms      float64 `json:"tick_to_wire_p99_ms"`
	StolenCPUCores       float64 `json:"stolen_cpu_cores"`
	// BytesPerIdleSubscriber is the round's ModeResult figure.
	BytesPerIdleSubscriber float64 `json:"bytes_per_idle_subscriber"`
}

// medianRound returns the round with the median CPU per delivery (the
// lower middle one of an even count), with every round's figures attached.
func medianRound(rounds []*ModeResult) *ModeResult {
	if len(rounds) == 1 {
		return rounds[0]
	}
	figs := make([]RoundFigures, len(rounds))
	for i, m := range rounds {
		figs[i] = RoundFigures{m.CPUMicrosPerDelivery, m.TickToWireP99Ms, m.StolenCPUCores, m.BytesPerIdleSubscriber}
	}
	sorted := slices.Clone(rounds)
	slices.SortStableFunc(sorted, func(a, b *ModeResult) int { return cmp.Compare(a.CPUMicrosPerDelivery, b.CPUMicrosPerDelivery) })
	med := *sorted[(len(sorted)-1)/2]
	med.Rounds = figs
	return &med
}

func (r *Report) set(m Mode, res *ModeResult) {
	switch m {
	case ModeEdge:
		r.Edge = res
	case ModeNaive:
		r.Baseline = res
	case ModeRaw:
		r.Raw = res
	}
}

func ratio(a, b *ModeResult, f func(*ModeResult) float64) float64 {
	if a == nil || b == nil || f(b) == 0 {
		return math.NaN()
	}
	return f(a) / f(b)
}

func mem(m *ModeResult) float64 { return m.BytesPerIdleSubscriber }
func cpu(m *ModeResult) float64 { return m.CPUMicrosPerDelivery }

// evaluate computes the ratios and judges the targets.
func (r *Report) evaluate() {
	r.BaselineToEdgeMemory = ratio(r.Baseline, r.Edge, mem)
	r.BaselineToEdgeCPU = ratio(r.Baseline, r.Edge, cpu)
	r.EdgeToRawCPU = ratio(r.Edge, r.Raw, cpu)
	r.Targets = nil
	e := r.Edge
	if e == nil {
		return
	}
	memTarget := Target{
		Name: "user-space memory per idle subscriber", Want: "≤ 0.5 KiB",
		Got: kib(e.BytesPerIdleSubscriber), Met: e.BytesPerIdleSubscriber <= TargetBytesPerIdleSubscriber,
		Note: fmt.Sprintf("over the RSS after a warm-up of %d; over the RSS before any: %s", e.WarmupSubscribers, kib(e.ColdBytesPerIdleSubscriber)),
	}
	if len(e.Memory) > 1 {
		worst := slices.MaxFunc(e.Memory, func(a, b MemoryPoint) int { return cmp.Compare(a.BytesPerSubscriber, b.BytesPerSubscriber) })
		memTarget.Got = fmt.Sprintf("%s at most (%d subscribers)", kib(worst.BytesPerSubscriber), worst.Subscribers)
		memTarget.Met = worst.BytesPerSubscriber <= TargetBytesPerIdleSubscriber
		r.Targets = append(r.Targets, memTarget, Target{
			Name: "memory per idle subscriber flat across the sweep", Want: fmt.Sprintf("largest ≤ %.2f× smallest", TargetMemoryFlatness),
			Got: fmt.Sprintf("%.2f×", flatness(e.Memory)), Met: flatness(e.Memory) <= TargetMemoryFlatness,
		})
	} else {
		r.Targets = append(r.Targets, memTarget)
	}
	r.Targets = append(r.Targets,
		Target{
			Name: "deliveries per second one core sustains", Want: "≥ 100 000",
			Got: fmt.Sprintf("%.0f", e.DeliveriesPerCore), Met: e.DeliveriesPerCore >= TargetDeliveriesPerCore,
		},
	)
	if !math.IsNaN(r.EdgeToRawCPU) {
		r.Targets = append(r.Targets, Target{
			Name: "CPU per delivery vs the raw write loop", Want: "≤ 1.15×",
			Got: fmt.Sprintf("%.2f×", r.EdgeToRawCPU), Met: r.EdgeToRawCPU <= TargetEdgeToRawCPU,
		})
	}
	tick := Target{
		Name: "tick-to-wire p99", Want: "≤ 25 ms (10 000 subscribers at 1 s)",
		Got: fmt.Sprintf("%.2f ms", e.TickToWireP99Ms), Met: e.TickToWireP99Ms <= TargetTickToWireP99Ms && e.DeliveriesMade > 0,
	}
	if r.Subscribers < TargetTickSubscribers || r.Intervals != IntervalsOne {
		tick.Note = fmt.Sprintf("measured with %d subscribers, intervals %s", r.Subscribers, r.Intervals)
	}
	r.Targets = append(r.Targets, tick,
		Target{
			Name: "allocations per delivery in steady state", Want: "0 (≤ 0.01 beyond the idle rate)",
			Got: fmt.Sprintf("%.4f", e.MarginalAllocsPerDelivery), Met: e.MarginalAllocsPerDelivery <= TargetMarginalAllocs,
		},
		Target{
			Name: "snapshots delivered vs due", Want: "all, no duplicates",
			Got: fmt.Sprintf("%d of %d, %d duplicates", e.DeliveriesMade, e.DeliveriesDue, e.Duplicates),
			Met: e.DeliveriesMade == e.DeliveriesDue && e.Duplicates == 0 && e.DeliveriesDue > 0,
		},
	)
}

// MarshalJSON writes one flat object: the edge's figures under their own
// names, the baseline's prefixed "baseline_", the raw loop's "raw_", the
// ratios, and the targets as a list.
func (r *Report) MarshalJSON() ([]byte, error) {
	out := map[string]any{
		"subscribers":         r.Subscribers,
		"intervals":           r.Intervals,
		"duration_seconds":    r.DurationSeconds,
		"cores":               r.Cores,
		"client_poll_seconds": r.ClientPollSeconds,
		"network":             r.Network,
		"slow_subscribers":    r.Slow,
		"rounds":              max(r.Rounds, 1),
		"targets":             r.Targets,
	}
	for _, m := range []struct {
		prefix string
		res    *ModeResult
	}{{"", r.Edge}, {"baseline_", r.Baseline}, {"raw_", r.Raw}} {
		if m.res == nil {
			continue
		}
		b, err := json.Marshal(m.res)
		if err != nil {
			return nil, err
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(b, &fields); err != nil {
			return nil, err
		}
		for k, v := range fields {
			out[m.prefix+k] = v
		}
	}
	for k, v := range map[string]float64{
		"baseline_to_edge_memory_ratio": r.BaselineToEdgeMemory,
		"baseline_to_edge_cpu_ratio":    r.BaselineToEdgeCPU,
		"edge_to_raw_cpu_ratio":         r.EdgeToRawCPU,
	} {
		if !math.IsNaN(v) {
			out[k] = v
		}
	}
	return json.Marshal(out)
}

// WriteTable prints the report for people: the modes side by side with
// the ratios, then the targets.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "meridian bench: %d subscribers, intervals %s, %s window per mode, %d cores",
		r.Subscribers, r.Intervals, time.Duration(r.DurationSeconds*float64(time.Second)), r.Cores)
	if r.ClientPollSeconds > 0 {
		fmt.Fprintf(&b, ", client polling every %s", time.Duration(r.ClientPollSeconds*float64(time.Second)))
	}
	if r.Rounds > 1 {
		fmt.Fprintf(&b, ", median of %d interleaved rounds", r.Rounds)
	}
	switch r.Network {
	case NetworkNamespace:
		b.WriteString(", loopback in a network namespace of each mode's own")
	case NetworkHost:
		b.WriteString(", the host's loopback")
		if r.NetworkNote != "" {
			fmt.Fprintf(&b, " (%s)", r.NetworkNote)
		}
	}
	b.WriteString("\n\n")
	cols := []*ModeResult{r.Edge, r.Baseline, r.Raw}
	t := [][]string{{"", "edge", "baseline", "raw loop", "baseline/edge", "edge/raw"}}
	row := func(name string, f func(*ModeResult) string, ratios ...string) {
		line := []string{name}
		for _, m := range cols {
			v := "–"
			if m != nil {
				v = f(m)
			}
			line = append(line, v)
		}
		t = append(t, append(line, append(ratios, "", "")[:2]...))
	}
	row("RSS per idle subscriber", func(m *ModeResult) string { return kib(m.BytesPerIdleSubscriber) }, times(r.BaselineToEdgeMemory))
	row("  of which the binary's pages", func(m *ModeResult) string { return kib(m.FileBytesPerIdleSubscriber) })
	row("  over the RSS before any (cold)", func(m *ModeResult) string { return kib(m.ColdBytesPerIdleSubscriber) })
	row("Go heap per idle subscriber", func(m *ModeResult) string { return kib(m.HeapBytesPerIdleSubscriber) })
	row("  heap spans / runtime / stacks", func(m *ModeResult) string {
		return kib(m.HeapInuseBytesPerIdleSubscriber) + " / " + kib(m.RuntimeBytesPerIdleSubscriber) + " / " + kib(m.StackBytesPerIdleSubscriber)
	})
	row("goroutines per subscriber", func(m *ModeResult) string { return fmt.Sprintf("%.2f", noNegZero(m.GoroutinesPerSubscriber, 100)) })
	row("CPU per delivery", func(m *ModeResult) string { return fmt.Sprintf("%.2f µs", m.CPUMicrosPerDelivery) }, times(r.BaselineToEdgeCPU), times(r.EdgeToRawCPU))
	row("  of which in the kernel", func(m *ModeResult) string { return fmt.Sprintf("%.0f%%", 100*m.SystemCPUShare) })
	row("deliveries/s one core sustains", func(m *ModeResult) string { return fmt.Sprintf("%.0f", m.DeliveriesPerCore) })
	row("deliveries/s measured", func(m *ModeResult) string { return fmt.Sprintf("%.0f", m.DeliveriesPerSecond) })
	row("allocations per delivery", func(m *ModeResult) string {
		return fmt.Sprintf("%.4f", m.AllocsPerDelivery)
	})
	row("  beyond the idle rate", func(m *ModeResult) string {
		return fmt.Sprintf("%.4f", m.MarginalAllocsPerDelivery)
	})
	row("tick-to-wire p50 / p99", func(m *ModeResult) string {
		return fmt.Sprintf("%.2f / %.2f ms", m.TickToWireP50Ms, m.TickToWireP99Ms)
	})
	row("tick-to-wire p99.9 / max", func(m *ModeResult) string {
		return fmt.Sprintf("%.1f / %.1f ms", m.TickToWireP999Ms, m.TickToWireMaxMs)
	})
	row("t0 error p50 / p99 (add to above)", func(m *ModeResult) string {
		return fmt.Sprintf("%.2f / %.2f ms", m.T0ErrorP50Ms, m.T0ErrorP99Ms)
	})
	row("snapshot age p50 / p99", func(m *ModeResult) string {
		return fmt.Sprintf("%.0f / %.0f ms", m.SnapshotAgeP50Ms, m.SnapshotAgeP99Ms)
	})
	row("delivered / due", func(m *ModeResult) string { return fmt.Sprintf("%d / %d", m.DeliveriesMade, m.DeliveriesDue) })
	row("duplicates, conflations, drops", func(m *ModeResult) string {
		return fmt.Sprintf("%d, %d, %d", m.Duplicates, m.Conflations, m.Dropped+m.ClosedByServer)
	})
	if r.Slow > 0 {
		row(fmt.Sprintf("slow (%d, stalling %s): Snapshots read", r.Slow, time.Duration(r.SlowStallSeconds*float64(time.Second))), func(m *ModeResult) string {
			return fmt.Sprintf("%d", m.SlowSnapshots)
		})
		row("  closed by the server", func(m *ModeResult) string { return fmt.Sprintf("%d", m.SlowClosed) })
	}
	row("CPU of client / rest of machine", func(m *ModeResult) string {
		return fmt.Sprintf("%.2f / %.2f cores", m.ClientCPUCores, m.OtherCPUCores)
	})
	row("CPU stolen by the hypervisor", func(m *ModeResult) string {
		return fmt.Sprintf("%.2f cores", m.StolenCPUCores)
	})
	writeAligned(&b, t)
	writeMemorySweep(&b, r)
	if e := r.Edge; e != nil && e.ServerTickLagP99Ms != nil && e.ServerTickLagP50Ms != nil {
		fmt.Fprintf(&b, "\nedge's own tick lag (scheduled tick → written): p50 %.2f ms, p99 %.2f ms\n", *e.ServerTickLagP50Ms, *e.ServerTickLagP99Ms)
	}
	for _, m := range cols {
		if m == nil || len(m.Rounds) == 0 {
			continue
		}
		parts := make([]string, len(m.Rounds))
		for i, f := range m.Rounds {
			parts[i] = fmt.Sprintf("%.2f µs / %.1f ms / %.2f / %s", f.CPUMicrosPerDelivery, f.TickToWireP99Ms, f.StolenCPUCores, kib(f.BytesPerIdleSubscriber))
		}
		fmt.Fprintf(&b, "%s rounds (CPU per delivery / tick-to-wire p99 / cores stolen / RSS per idle subscriber): %s\n", m.Mode, strings.Join(parts, ", "))
	}
	for _, m := range cols {
		if m == nil {
			continue
		}
		if m.WorstDelivery != "" {
			fmt.Fprintf(&b, "%s: latest delivery: %s\n", m.Mode, m.WorstDelivery)
		}
		if m.ShortSubscriber != "" {
			fmt.Fprintf(&b, "%s: missed ticks, e.g. %s\n", m.Mode, m.ShortSubscriber)
		}
		if m.ClientProblem != "" {
			fmt.Fprintf(&b, "%s: the client saw: %s\n", m.Mode, m.ClientProblem)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(&b, "\ntargets:")
		for _, t := range r.Targets {
			mark := "met    "
			if !t.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(&b, "  %s  %s %s: %s", mark, t.Name, t.Want, t.Got)
			if t.Note != "" {
				fmt.Fprintf(&b, " (%s)", t.Note)
			}
			fmt.Fprintln(&b)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeAligned prints rows with the first column left-aligned and the
// others right-aligned, two spaces apart; empty trailing cells are dropped.
func writeAligned(b *strings.Builder, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i == 0 {
				line.WriteString(cell + pad)
				continue
			}
			line.WriteString("  " + pad + cell)
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

func kib(b float64) string {
	if math.Abs(b) >= 1024 {
		return fmt.Sprintf("%.2f KiB", b/1024)
	}
	return fmt.Sprintf("%.0f B", b)
}

// noNegZero rounds x to 1/scale, so that a tiny negative value prints as
// 0.00 rather than -0.00.
func noNegZero(x, scale float64) float64 {
	if r := math.Round(x*scale) / scale; r != 0 {
		return r
	}
	return 0
}

// times formats a ratio; NaN or 0 (a Report built without evaluate) is
// shown as nothing.
func times(x float64) string {
	if math.IsNaN(x) || x == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", x)
}
