package aggregator

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// The cluster tier's node: every cluster-tier aggregator, leader or hot
// follower, feeds the region snapshots it sees into its ClusterMerger, so a
// follower that takes over holds what the leader held. Its tick for second
// T comes as soon as every region seen recently published T (regionsIn),
// or at T + ClusterDeadline with the latest it has (untilTick); the rest
// (election, book, publishing, rollups, state) is the single tier's.

// onRegionSnapshot runs on the region snapshot subscription's goroutine.
// Whoever published it (a shard leader, or one publishing live-only), its
// counters are the region's: the ClusterMerger only moves a region forward.
func (a *Aggregator) onRegionSnapshot(msg *nats.Msg) {
	now := a.cfg.Now()
	s, err := proto.DecodeSnapshot(msg.Data)
	var out RegionOutcome
	switch {
	case err != nil:
		out = RegionRejected
	case s.FromFuture(now):
		// Its second would hold back the region's snapshots until the
		// clocks agree.
		out = RegionRejected
	default:
		a.mu.Lock()
		out = a.cluster.Add(&s, now)
		complete := out != RegionRejected && out != RegionOld && a.cluster.Complete(now)
		a.mu.Unlock()
		if complete {
			select {
			case a.regionsIn <- struct{}{}:
			default:
			}
		}
	}
	a.regionSnaps.WithLabelValues(out.String()).Inc()
}

// untilTick is the time to the next tick: the next second boundary, for
// TierCluster ClusterDeadline after it (unless every region published the
// second before then: regionsIn).
func (a *Aggregator) untilTick() time.Duration {
	if a.cfg.Tier != TierCluster {
		return a.untilNextSecond()
	}
	now := a.cfg.Now()
	next := now.Truncate(time.Second).Add(a.cfg.ClusterDeadline)
	if !next.After(now) {
		next = next.Add(time.Second)
	}
	return next.Sub(now)
}

// nudgeTicks reports whether a change of leadership at now ticks at once.
// The cluster tier ticks at once only when this second's tick has passed
// (last), so that a new leader publishes it; otherwise the coming tick,
// with every region's snapshot of the second, publishes.
func (a *Aggregator) nudgeTicks(now time.Time, last int64) bool {
	return a.cfg.Tier != TierCluster || now.Unix() == last
}

func (a *Aggregator) tierCollectors(ns string) []prometheus.Collector {
	a.regionSnaps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "aggregator", Name: "cluster_tier_region_snapshots_total",
		Help: "Region snapshots the cluster tier received, by outcome: applied, held (counters below the region's latest, held), new_life (a forgotten region back), old (not newer), rejected (undecodable, from the future, or beyond the region cap).",
	}, []string{"outcome"})
	for _, o := range []RegionOutcome{RegionApplied, RegionHeld, RegionNewLife, RegionOld, RegionRejected} {
		a.regionSnaps.WithLabelValues(o.String())
	}
	if a.cfg.Tier != TierCluster {
		return nil
	}
	return []prometheus.Collector{
		a.regionSnaps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "aggregator", Name: "cluster_tier_regions",
			Help: "Regions whose latest snapshot the cluster tier holds (their counters count in the cluster's forever).",
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(a.cluster.Regions())
		}),
	}
}
