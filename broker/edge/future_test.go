//go:build linux

package edge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// A snapshot dated beyond proto.MaxSnapshotSkew is ignored: it would
// otherwise be "newer" than every real one until its time came, and the edge
// would serve the forged figures and drop the real ones as stale.
func TestSnapshotsFromTheFutureAreIgnored(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	now := time.Now()
	te.publishWait(snap(now, 10))

	forged := snap(now.Add(time.Hour), 1<<40)
	te.publish(forged)
	wait.For(t, 10*time.Second, "future snapshot counted", func() bool { return testutil.ToFloat64(te.m.snapshotsFuture) == 1 })
	if got, _ := te.latest(proto.ClusterScope()); got.RequestsTotal != 10 {
		t.Fatalf("edge holds %d requests, want the real 10", got.RequestsTotal)
	}
	// The real snapshots that follow are served, not dropped as stale.
	te.publishWait(snap(now.Add(time.Second), 11))
	// Within the skew a snapshot is accepted: clocks differ a little.
	te.publishWait(snap(now.Add(proto.MaxSnapshotSkew-time.Second), 12))
	if got := testutil.ToFloat64(te.m.snapshotsStale); got != 0 {
		t.Fatalf("%v real snapshots dropped as stale", got)
	}
}
