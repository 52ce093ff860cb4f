package proto

import "time"

// MaxSnapshotSkew is how far in the future a snapshot's or rollup's time may
// lie on a receiver's clock. Edges and aggregators ignore snapshots dated
// later: one such snapshot would otherwise be "newer" than every real one
// until that time came, freezing the scope for live clients and keeping a
// new leader from publishing it. Aggregators stamp snapshots with the
// second that just began, so a receiver sees them up to a second old; five
// seconds leaves room for clocks that NTP keeps within far less.
const MaxSnapshotSkew = 5 * time.Second

// FromFuture reports whether s is dated more than MaxSnapshotSkew after now.
func (s *Snapshot) FromFuture(now time.Time) bool {
	return s.Time.Sub(now) > MaxSnapshotSkew
}
