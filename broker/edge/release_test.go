//go:build linux

package edge

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/integration/wait"
)

// quietSinceUpgrade waits until the edge counted n upgrades since its
// last release and the latest is releaseQuiet old.
func quietSinceUpgrade(t *testing.T, te *testEdge, n int64) {
	t.Helper()
	wait.For(t, 5*time.Second, "upgrades counted", func() bool { return te.rel.upgrades.Load() == n })
	wait.For(t, 5*time.Second, "handshakes quiet", func() bool {
		return time.Duration(te.mono()-te.rel.lastUpgrade.Load()) >= releaseQuiet
	})
}

func TestMemoryReleasedOnceAfterBurst(t *testing.T) {
	te := startEdge(t, Config{MemoryReleaseUpgrades: 3})
	for range 3 {
		dial(t, te.url)
	}
	wait.For(t, 5*time.Second, "memory released after the burst", func() bool {
		return testutil.ToFloat64(te.m.memoryReleases) == 1
	})
	// Nothing new: no second release.
	if te.maybeRelease() {
		t.Error("released again without a new burst")
	}
	// Fewer upgrades than the setting since: none either.
	dial(t, te.url)
	quietSinceUpgrade(t, te, 1)
	if te.maybeRelease() {
		t.Error("released after 1 upgrade, want 3")
	}
	if got := testutil.ToFloat64(te.m.memoryReleases); got != 1 {
		t.Errorf("memory_releases_total %v, want 1", got)
	}
}

// A handshake in flight means the burst goes on (a slowloris client too:
// the release waits for HandshakeTimeout to close it, no longer).
func TestMemoryReleaseWaitsForHandshakes(t *testing.T) {
	te := startEdge(t, Config{MemoryReleaseUpgrades: 2})
	stalled := rawDial(t, te.Addr().String()) // sends nothing: stays in its handshake
	wait.For(t, 5*time.Second, "a handshake in flight", func() bool { return len(te.hsSem) == 1 })
	dial(t, te.url)
	dial(t, te.url)
	quietSinceUpgrade(t, te, 2)
	if te.maybeRelease() || testutil.ToFloat64(te.m.memoryReleases) != 0 {
		t.Fatal("released with a handshake in flight")
	}
	stalled.conn.Close()
	wait.For(t, 5*time.Second, "memory released once the handshake ended", func() bool {
		return testutil.ToFloat64(te.m.memoryReleases) == 1
	})
}

func TestMemoryReleaseOff(t *testing.T) {
	te := startEdge(t, Config{MemoryReleaseUpgrades: -1})
	dial(t, te.url)
	quietSinceUpgrade(t, te, 1)
	if te.maybeRelease() {
		t.Error("released with MemoryReleaseUpgrades -1")
	}
}
