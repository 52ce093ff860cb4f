package aggregator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// Sharding the merge. One leader merging every report is bounded by one
// core; region sharding splits the per-report work between region shards
// and leaves the cluster tier a handful of region snapshots per second:
//
//   - TierAll (the default) is the single tier: every aggregator merges
//     every report and the leader publishes every scope.
//   - TierRegion: the aggregators of one region set (Config.Regions) are one
//     HA shard. They subscribe only to their regions' report subjects and
//     publish those regions' snapshots and rollups and their instances'
//     (on demand, as ever), never the cluster's. Each shard has its own
//     lease and merge-state keys, derived from the sorted region set.
//   - TierCluster: receives no report; it merges the published region
//     snapshots into the cluster snapshot (ClusterMerger, clustertier.go)
//     and publishes it and the cluster rollups, with its own lease and
//     state.
//
// Subjects and payloads are the single tier's, so edges and history need
// no change.

// Tier is the part of a sharded merge an aggregator does.
type Tier string

// The tiers (flag --tier).
const (
	TierAll     Tier = "all"
	TierRegion  Tier = "region"
	TierCluster Tier = "cluster"
)

const (
	// DefaultClusterDeadline is how long after a second the cluster tier
	// waits for region snapshots missing from it: with region snapshots
	// published a few milliseconds after the second, the cluster's lands
	// well within 250 ms of it even when a region shard is failing over.
	DefaultClusterDeadline = 200 * time.Millisecond
	// maxClusterDeadline keeps the cluster tier's publication inside the
	// second it publishes.
	maxClusterDeadline = 900 * time.Millisecond
	// maxKeySuffix bounds the region part of a shard's lease and state keys;
	// longer region sets are named by a digest.
	maxKeySuffix = 128
)

// ParseTier parses "all", "region" or "cluster".
func ParseTier(s string) (Tier, error) {
	switch t := Tier(s); t {
	case TierAll, TierRegion, TierCluster:
		return t, nil
	}
	return "", fmt.Errorf("tier %q: want %s, %s or %s", s, TierAll, TierRegion, TierCluster)
}

// validateTier checks Tier, Regions and ClusterDeadline.
func (c Config) validateTier() error {
	switch c.Tier {
	case "", TierAll, TierCluster:
		if len(c.Regions) > 0 {
			return fmt.Errorf("Regions %v: only the %s tier takes regions", c.Regions, TierRegion)
		}
	case TierRegion:
		if len(c.Regions) == 0 {
			return fmt.Errorf("Tier %s needs Regions", TierRegion)
		}
		for _, r := range c.Regions {
			if err := proto.ValidateToken("region", r); err != nil {
				return fmt.Errorf("Regions: %w", err)
			}
		}
	default:
		_, err := ParseTier(string(c.Tier))
		return err
	}
	if c.ClusterDeadline < 0 || c.ClusterDeadline > maxClusterDeadline {
		return fmt.Errorf("ClusterDeadline %v: want 0 (default %v) up to %v", c.ClusterDeadline, DefaultClusterDeadline, maxClusterDeadline)
	}
	return nil
}

func (c Config) tierDefaults() Config {
	if c.Tier == "" {
		c.Tier = TierAll
	}
	if c.ClusterDeadline == 0 {
		c.ClusterDeadline = DefaultClusterDeadline
	}
	c.Regions = slices.Compact(slices.Sorted(slices.Values(c.Regions)))
	return c
}

// shardKey names the tier's shard in the lease and state keys: "" for the
// single tier, whose keys stay LeaseKey and StateKey so that existing
// deployments keep their state.
func (c Config) shardKey() string {
	switch c.Tier {
	case TierCluster:
		return "cluster"
	case TierRegion:
		// Region names hold no '.', so the joined set is unambiguous.
		set := strings.Join(c.Regions, ".")
		if len(set) > maxKeySuffix {
			sum := sha256.Sum256([]byte(set))
			set = "sha256-" + hex.EncodeToString(sum[:16])
		}
		return "region." + set
	}
	return ""
}

func (c Config) leaseKey() string { return withShard(LeaseKey, c.shardKey()) }
func (c Config) stateKey() string { return withShard(StateKey, c.shardKey()) }

func withShard(key, shard string) string {
	if shard == "" {
		return key
	}
	return key + "." + shard
}

type subscription struct {
	subject string
	cb      nats.MsgHandler
}

// subscriptions lists what the aggregator subscribes to, in order:
// published snapshots and rollups first, so that the book knows what others
// published before this aggregator can lead. Each tier follows only the
// scopes it publishes.
func (a *Aggregator) subscriptions() []subscription {
	switch a.cfg.Tier {
	case TierCluster:
		cluster := proto.ClusterScope()
		return []subscription{
			{proto.SnapshotSubject(cluster), a.onSnapshot},
			{proto.RollupSubject(cluster), a.onRollup},
			{proto.SnapshotSubjectPrefix + ".region.*", a.onRegionSnapshot},
		}
	case TierRegion:
		var subs []subscription
		for _, r := range a.cfg.Regions {
			region := proto.RegionScope(r)
			subs = append(subs,
				subscription{proto.SnapshotSubject(region), a.onSnapshot},
				subscription{proto.RollupSubject(region), a.onRollup})
		}
		subs = append(subs,
			subscription{proto.SnapshotSubjectPrefix + ".instance.*", a.onSnapshot},
			subscription{proto.RollupSubjectPrefix + ".instance.*", a.onRollup},
			subscription{proto.InterestSubject, a.onInterest})
		for _, r := range a.cfg.Regions {
			subs = append(subs, subscription{proto.ReportSubjectPrefix + "." + r + ".>", a.onShardReport})
		}
		return subs
	}
	return []subscription{
		{proto.SnapshotSubjectAll, a.onSnapshot},
		{proto.RollupSubjectAll, a.onRollup},
		{proto.InterestSubject, a.onInterest},
		{proto.ReportSubjectAll, a.onReport},
	}
}

// onShardReport is a region shard's report handler: a report whose subject
// names a region outside the shard is rejected (RejectShard) before it is
// decoded; the rest goes to onReport, which checks that the payload's region
// is the subject's. The subscriptions deliver only the shard's regions, so
// this is a guard against a misrouted or hand-published message.
func (a *Aggregator) onShardReport(msg *nats.Msg) {
	rest, _ := strings.CutPrefix(msg.Subject, proto.ReportSubjectPrefix+".")
	region, _, _ := strings.Cut(rest, ".")
	if _, ok := slices.BinarySearch(a.cfg.Regions, region); !ok {
		a.metrics.received.Inc()
		a.rejectReport(&proto.Report{Region: region}, msg.Subject, RejectShard, a.cfg.Now())
		return
	}
	a.onReport(msg)
}

// ownsScope reports whether this aggregator's tier publishes scope s: a
// region shard sees the other shards' instance snapshots on the shared
// subject and must neither adopt them into its book nor yield to their
// publishers. Instances belong to the shard that tracks them.
func (a *Aggregator) ownsScope(s proto.Scope) bool {
	switch a.cfg.Tier {
	case TierCluster:
		return s.Kind == proto.ScopeCluster
	case TierRegion:
		switch s.Kind {
		case proto.ScopeRegion:
			_, ok := slices.BinarySearch(a.cfg.Regions, s.Name)
			return ok
		case proto.ScopeInstance:
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.merger.Tracks(s.Name)
		}
		return false
	}
	return true
}

// snapshotsAt computes the tick's snapshots of the scopes this tier
// publishes, in a.snaps. The caller holds a.mu.
func (a *Aggregator) snapshotsAt(now time.Time, wanted func(instance string) bool) []proto.Snapshot {
	if a.cfg.Tier == TierCluster {
		a.snaps = a.cluster.AppendSnapshots(a.snaps[:0], now)
		return a.snaps
	}
	a.snaps = a.merger.AppendSnapshotsFor(a.snaps[:0], now, wanted)
	if a.cfg.Tier == TierRegion && len(a.snaps) > 0 && a.snaps[0].Scope.Kind == proto.ScopeCluster {
		// The shard's cluster sums only its regions: never published.
		return a.snaps[1:]
	}
	return a.snaps
}

// mergeState and restoreState are the tier's State and Restore. The
// caller holds a.mu.
func (a *Aggregator) mergeState() State {
	if a.cfg.Tier == TierCluster {
		return a.cluster.State()
	}
	return a.merger.State()
}

func (a *Aggregator) restoreState(s State) error {
	if a.cfg.Tier == TierCluster {
		return a.cluster.Restore(s)
	}
	return a.merger.Restore(s)
}

// Tracks reports whether the instance is tracked.
func (m *Merger) Tracks(instance string) bool {
	_, ok := m.insts[instance]
	return ok
}
