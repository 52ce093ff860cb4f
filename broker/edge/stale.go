package edge

import (
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Stale data. When a scope's live snapshots stop (no aggregator publishes,
// or this edge lost NATS), the cadence goes on repeating the newest one,
// whose timestamp tells its age; a client is also told, once, with an
// Error event saying since when the data is stale. Only a connection that
// has seen its scope fresh is told: a scope known only from history is old
// by nature and says so with its timestamps. When snapshots resume, the
// next stall is told again.

// DefaultStaleAfter is Config.StaleAfter's default: snapshots come every
// second, so this is two missed seconds and some delivery delay.
const DefaultStaleAfter = 3 * time.Second

// staleMark values in conn.staleMark: staleUnarmed until the connection
// delivers a fresh snapshot of its scope, staleArmed from then on, else the
// Unix second of the snapshot the connection was told is stale.
const (
	staleUnarmed int64 = 0
	staleArmed   int64 = 1
)

// noteStaleLocked sends the stale notice for sf if it is due. c.mu is held.
func (c *conn) noteStaleLocked(sf *snapFrames, now time.Time, staleAfter time.Duration) {
	t := sf.snap.Time
	if now.Sub(t) <= staleAfter {
		c.staleMark = staleArmed
		return
	}
	if c.staleMark != staleArmed {
		return // never fresh, or told already
	}
	c.staleMark = t.Unix()
	c.enqueueLocked(errorFrame(staleMessage(sf.snap.Scope, t)), false)
}

// staleMessage is the Error event's text.
func staleMessage(scope proto.Scope, since time.Time) string {
	return "data stale since " + since.UTC().Format(time.RFC3339) + ": no newer snapshot of " + scope.String() +
		" has arrived; the snapshots repeat the last one until live data resumes"
}
