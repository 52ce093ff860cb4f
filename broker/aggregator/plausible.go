package aggregator

import (
	"strings"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Plausibility bounds: what one report may claim, so that neither a buggy
// gateway nor anyone able to publish reports can freeze or poison the merge.
const (
	// DefaultMaxRequestRate is the most requests per second one instance
	// is believed to count: a report may add at most MaxRequestRate ×
	// (time since the instance's previous report on the aggregator's clock
	// + PlausibilitySlack) to each request counter. For the first report of
	// a boot the time is since the previous boot's last report, or for a
	// new instance since its reported start time (at most MaxBootAge ago).
	// A million per second is far above what one proxy instance serves,
	// and at that rate the cluster's 64-bit counters take half a million
	// instance-years to overflow.
	DefaultMaxRequestRate = 1_000_000
	// PlausibilitySlack is added to every elapsed time the bounds use, for
	// clock steps, delivery jitter and a gateway's own burst.
	PlausibilitySlack = 10 * time.Second
	// MaxBootAge caps how long ago a new instance's boot may claim to have
	// started for the rate bound.
	MaxBootAge = 365 * 24 * time.Hour
	// MaxStartSkew is how far in the future (on the aggregator's clock) a
	// boot's start time may lie: clocks differ, but not by minutes.
	MaxStartSkew = time.Minute
	// seqSlack is how many reports beyond two per elapsed publish interval
	// a sequence number may advance.
	seqSlack = 10
	// DefaultRecoverAfter is how long an instance whose sequence number
	// jumped ahead must keep sending reports consistent with the jump (and
	// no report consistent with its old sequence) before the jump is
	// accepted: a real gateway reporting every second keeps its place, a
	// single forged or corrupt report is simply rejected.
	DefaultRecoverAfter = 10 * time.Second
	// DefaultMaxInstances caps the instances tracked; a report of a new
	// instance beyond it is rejected until one is forgotten.
	DefaultMaxInstances = 10_000
	// DefaultMaxRegions caps the regions (scopes) tracked likewise.
	DefaultMaxRegions = 256
)

// Reject says why a report was rejected.
type Reject uint8

const (
	// RejectNone: not rejected.
	RejectNone Reject = iota
	// RejectInvalid: the report failed validation.
	RejectInvalid
	// RejectOverflow: its counts would overflow the cluster's counters.
	RejectOverflow
	// RejectCounterJump: a counter grew faster than MaxRequestRate allows.
	RejectCounterJump
	// RejectSeqGap: its sequence number is far ahead of the last applied.
	RejectSeqGap
	// RejectFutureStart: its boot started more than MaxStartSkew from now.
	RejectFutureStart
	// RejectMaxInstances: a new instance beyond MaxInstances.
	RejectMaxInstances
	// RejectMaxRegions: a new region beyond MaxRegions.
	RejectMaxRegions
	// RejectSubject: the payload names another region or instance than
	// the subject it was published on (checked by the Aggregator, which
	// sees subjects; NATS permissions bind subjects to credentials).
	RejectSubject
	// RejectShard: a region shard (TierRegion) received a report of a
	// region outside its Config.Regions.
	RejectShard
)

var rejectNames = [...]string{"", "invalid", "overflow", "counter_jump", "seq_gap", "future_start", "max_instances", "max_regions", "subject_mismatch", "region_not_in_shard"}

// String is the reason's metric label.
func (r Reject) String() string {
	if int(r) < len(rejectNames) && r != RejectNone {
		return rejectNames[r]
	}
	return "none"
}

// suspect follows an instance whose sequence number jumped ahead: the
// newest report of the jumped sequence and since when it has kept to it.
type suspect struct {
	boot  string
	seq   uint64
	at    time.Time
	since time.Time
}

// admit checks report r against the plausibility bounds and the caps,
// before Apply classifies and merges it; RejectNone lets Apply go on.
func (m *Merger) admit(r *proto.Report, now time.Time) Reject {
	raw := totalsOf(&r.Counters)
	in, known := m.insts[r.Instance]
	if _, ok := m.regions[r.Region]; !ok && len(m.regionsBy) >= m.cfg.MaxRegions {
		return RejectMaxRegions
	}
	if !known {
		if len(m.instsBy) >= m.cfg.MaxInstances {
			return RejectMaxInstances
		}
		return m.admitBoot(r, raw, now.Sub(r.StartTime), now)
	}
	switch {
	case r.BootID == in.prevBoot:
		return RejectNone // a late report of the previous boot: a duplicate
	case r.BootID != in.boot:
		return m.admitBoot(r, raw, now.Sub(in.lastSeen), now)
	case r.Seq <= in.seq:
		return RejectNone // a duplicate
	}
	elapsed := max(now.Sub(in.lastSeen), 0)
	delta := raw
	if !decreased(in, raw, r.LatencyBuckets) {
		delta = raw.sub(in.raw)
	}
	if !m.withinRate(delta, elapsed) {
		return RejectCounterJump
	}
	if r.Seq-in.seq > seqBound(elapsed, in.interval) {
		return m.followSeqJump(in, r, now)
	}
	in.suspect = nil // a sane report of the sequence it had
	return RejectNone
}

// admitBoot checks the first report of a boot, whose counters count in full
// and which can have counted for at most elapsed.
func (m *Merger) admitBoot(r *proto.Report, raw Totals, elapsed time.Duration, now time.Time) Reject {
	if r.StartTime.Sub(now) > MaxStartSkew {
		return RejectFutureStart
	}
	elapsed = min(max(elapsed, 0), MaxBootAge)
	if !m.withinRate(raw, elapsed) {
		return RejectCounterJump
	}
	if r.Seq > seqBound(elapsed, r.Interval) {
		return RejectSeqGap
	}
	return RejectNone
}

// followSeqJump handles a report whose sequence number jumped: rejected,
// unless the instance has kept to the jumped sequence, and to nothing else,
// for RecoverAfter. Then the jump is accepted and the instance counts again.
func (m *Merger) followSeqJump(in *instState, r *proto.Report, now time.Time) Reject {
	s := in.suspect
	if s != nil && s.boot == r.BootID && r.Seq > s.seq && r.Seq-s.seq <= seqBound(max(now.Sub(s.at), 0), in.interval) {
		if now.Sub(s.since) >= m.cfg.RecoverAfter {
			in.suspect = nil
			return RejectNone
		}
		s.seq, s.at = r.Seq, now
		return RejectSeqGap
	}
	in.suspect = &suspect{boot: r.BootID, seq: r.Seq, at: now, since: now}
	return RejectSeqGap
}

// withinRate reports whether delta's request and duration counts could have
// been counted in elapsed at MaxRequestRate.
func (m *Merger) withinRate(delta Totals, elapsed time.Duration) bool {
	limit := float64(m.cfg.MaxRequestRate) * (elapsed + PlausibilitySlack).Seconds()
	return float64(delta.RequestsTotal) <= limit && float64(delta.DurationCount) <= limit
}

// seqBound is how far a sequence number may advance in elapsed: two reports
// per publish interval, plus seqSlack.
func seqBound(elapsed, interval time.Duration) uint64 {
	if interval <= 0 {
		return seqSlack
	}
	return uint64(2*(elapsed+PlausibilitySlack)/interval) + seqSlack
}

// subjectMatches reports whether a report published on subject names the
// region and instance of the subject, meridian.report.<region>.<instance>.
func subjectMatches(subject string, r *proto.Report) bool {
	rest, ok := strings.CutPrefix(subject, proto.ReportSubjectPrefix+".")
	if !ok {
		return false
	}
	region, instance, ok := strings.Cut(rest, ".")
	return ok && region == r.Region && instance == r.Instance
}

// rejectReport counts a rejected report by reason and logs it, rate-limited.
// Reaching a cap is logged as such: it needs an operator, not a gateway fix.
func (a *Aggregator) rejectReport(r *proto.Report, subject string, why Reject, now time.Time) {
	a.metrics.rejected.WithLabelValues(why.String()).Inc()
	ok, suppressed := a.rejectLog.allow(now)
	if !ok {
		return
	}
	switch why {
	case RejectMaxInstances, RejectMaxRegions:
		a.log.Warn("cap reached: report of a new instance or region rejected; raise --max-instances or --max-regions if this cluster is really this large",
			"reason", why.String(), "instance", r.Instance, "region", r.Region,
			"max_instances", a.merger.cfg.MaxInstances, "max_regions", a.merger.cfg.MaxRegions, "suppressed", suppressed)
	default:
		a.log.Warn("reject implausible report", "reason", why.String(), "subject", subject,
			"instance", r.Instance, "region", r.Region, "boot_id", r.BootID, "seq", r.Seq,
			"requests_total", r.RequestsTotal, "suppressed", suppressed)
	}
}
