package aggregator

import (
	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// What an aggregator believes of the snapshots and rollups it sees on NATS.
// Its book of published seconds and counters (book.go) is fed from them so
// that a new leader neither publishes a second twice nor lets counters go
// down; a forged one adopted there would make the leader publish forged
// totals, or stop publishing a scope, for as long as it leads. So:
//
//   - the leader adopts nothing from NATS: it records what it publishes
//     itself, and no one else may publish while it leads;
//   - nothing dated beyond proto.MaxSnapshotSkew in the future is adopted;
//   - with the election, a follower adopts only what the lease holder it
//     last saw published (PublisherHeader): never a fenced former
//     leader's late snapshots, nor unsigned ones. While the lease store is
//     unavailable nobody holds the lease, and live-only publishers
//     (liveonly.go) must see each other's snapshots: then any signed one is
//     adopted, its counters still held only if plausible.
//
// Who may publish snapshots at all is NATS' to enforce (natsauth): only the
// aggregator identity.

// ignoredReasons label snapshots_ignored_total.
const (
	ignoredLeading = "while_leading"
	ignoredFuture  = "future"
	ignoredForeign = "not_lease_holder"
)

// adoptable reports whether s, received in msg, may be adopted by the book.
func (a *Aggregator) adoptable(msg *nats.Msg, s *proto.Snapshot) bool {
	if a.Leader() {
		if msg.Header.Get(PublisherHeader) != a.cfg.ID { // not its own echo
			a.metrics.ignored.WithLabelValues(ignoredLeading).Inc()
		}
		return false
	}
	if s.FromFuture(a.cfg.Now()) {
		a.metrics.ignored.WithLabelValues(ignoredFuture).Inc()
		return false
	}
	if a.elector == nil {
		return true // leadership is decided elsewhere (SetLeader); no lease to check against
	}
	from := msg.Header.Get(PublisherHeader)
	if from == "" || (from != a.elector.Holder() && !a.elector.StoreUnavailable()) {
		a.metrics.ignored.WithLabelValues(ignoredForeign).Inc()
		return false
	}
	return true
}

// plausibleHold reports whether the book may hold snapshot s's counters at
// the published ones c. A new leader trails what was published only by the
// reports it missed of the old leader's last moments: at most
// MaxRequestRate per live instance over PlausibilitySlack. Published
// counters further ahead were not published by a real leader (an adopted
// forgery, which NATS permissions should have stopped), and holding them
// would publish them for as long as this aggregator leads: s keeps its own
// counters instead, and the refusal is counted. The caller holds b.mu.
func (b *book) plausibleHold(s *proto.Snapshot, c *Totals) bool {
	if b.maxRate <= 0 {
		return true
	}
	gap := float64(c.RequestsTotal) - float64(s.RequestsTotal)
	if gap <= float64(b.maxRate)*float64(max(s.Instances, 1))*PlausibilitySlack.Seconds() {
		return true
	}
	b.refused++
	return false
}
