package proto

import (
	"fmt"
	"strings"
)

// NATS subjects. Gateways publish one report per instance on
// meridian.report.<region>.<instance>; the leading aggregator publishes one
// snapshot per scope and second on meridian.snapshot.<scope>, where <scope> is
// Scope.String(): "cluster", "region.<region>" or "instance.<instance>".
// The snapshot subjects are captured by the JetStream stream HistoryStream,
// which is the history; edges read live snapshots with a core subscription.
const (
	ReportSubjectPrefix   = "meridian.report"
	ReportSubjectAll      = ReportSubjectPrefix + ".>"
	SnapshotSubjectPrefix = "meridian.snapshot"
	SnapshotSubjectAll    = SnapshotSubjectPrefix + ".>"

	// HistoryStream is the JetStream stream holding every published snapshot.
	HistoryStream = "MERIDIAN_SNAPSHOTS"

	// Rollups: one snapshot per scope and minute on meridian.rollup.<scope>,
	// downsampled per metric kind, kept much longer in RollupStream.
	RollupSubjectPrefix = "meridian.rollup"
	RollupSubjectAll    = RollupSubjectPrefix + ".>"
	RollupStream        = "MERIDIAN_ROLLUPS"

	// Refill: snapshots published live while JetStream had no quorum are
	// written to the history afterwards on meridian.refill.snapshot.<scope>.
	// HistoryStream stores them under their snapshot subject (a stream
	// subject transform), so history readers find them where they belong,
	// while live subscribers of the snapshot subjects never see an old
	// second arrive late.
	RefillSubjectPrefix = "meridian.refill.snapshot"
	RefillSubjectAll    = RefillSubjectPrefix + ".>"
)

// RefillSubject is the subject a snapshot of scope s is refilled into the
// history on (see RefillSubjectPrefix).
func RefillSubject(s Scope) string {
	return RefillSubjectPrefix + "." + s.String()
}

// RollupSubject is the subject the one-minute rollups of scope s go to.
func RollupSubject(s Scope) string {
	return RollupSubjectPrefix + "." + s.String()
}

// ReportSubject is the subject a gateway instance publishes its reports on.
func ReportSubject(region, instance string) string {
	return ReportSubjectPrefix + "." + region + "." + instance
}

// SnapshotSubject is the subject snapshots of scope s are published on.
func SnapshotSubject(s Scope) string {
	return SnapshotSubjectPrefix + "." + s.String()
}

// maxTokenLen bounds region and instance names: they become NATS subject
// tokens and Prometheus label values.
const maxTokenLen = 64

// ValidateToken reports whether s can be used as a region or instance name:
// 1 to 64 characters from [A-Za-z0-9_-]. Such names are safe as NATS subject
// tokens, Prometheus label values and URL query values.
func ValidateToken(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(s) > maxTokenLen {
		return fmt.Errorf("%s %q is longer than %d characters", kind, truncate(s, maxTokenLen), maxTokenLen)
	}
	// By rune, so that the error names the character sent ('é', not 'Ã'),
	// and an invalid byte as such.
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%s %q has character %q; use letters, digits, '-' and '_'", kind, s, c)
		}
	}
	return nil
}

// ScopeKind says what part of the cluster a snapshot covers.
type ScopeKind uint8

const (
	ScopeCluster ScopeKind = iota
	ScopeRegion
	ScopeInstance
)

// Scope names the part of the cluster a snapshot covers. The zero value is
// the whole cluster.
type Scope struct {
	Kind ScopeKind
	Name string // region or instance name; empty for the cluster
}

// ClusterScope, RegionScope and InstanceScope build scopes.
func ClusterScope() Scope             { return Scope{} }
func RegionScope(region string) Scope { return Scope{Kind: ScopeRegion, Name: region} }
func InstanceScope(inst string) Scope { return Scope{Kind: ScopeInstance, Name: inst} }

// String is the scope's subject suffix: "cluster", "region.eu", "instance.gw-1".
func (s Scope) String() string {
	switch s.Kind {
	case ScopeRegion:
		return "region." + s.Name
	case ScopeInstance:
		return "instance." + s.Name
	default:
		return "cluster"
	}
}

// ParseScope is the inverse of Scope.String.
func ParseScope(v string) (Scope, error) {
	if v == "cluster" {
		return ClusterScope(), nil
	}
	kind, name, ok := strings.Cut(v, ".")
	if ok {
		switch kind {
		case "region":
			if err := ValidateToken("region", name); err != nil {
				return Scope{}, fmt.Errorf("parse scope: %w", err)
			}
			return RegionScope(name), nil
		case "instance":
			if err := ValidateToken("instance", name); err != nil {
				return Scope{}, fmt.Errorf("parse scope: %w", err)
			}
			return InstanceScope(name), nil
		}
	}
	return Scope{}, fmt.Errorf("parse scope %q: want cluster, region.<name> or instance.<name>", v)
}

// MarshalText and UnmarshalText let a Scope travel as a JSON string.
func (s Scope) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *Scope) UnmarshalText(b []byte) error {
	v, err := ParseScope(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
