package edge

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Returning an accept burst's memory. Every upgrade leaves garbage behind
// (the net.Conn and its poll descriptor the edge drops for a bare socket,
// request buffers, the upgrade's scratch), while an idle subscriber
// allocates nothing afterwards: once a burst is over the collector has no
// reason to run, and the garbage and the free pages it leaves stay
// resident — measured at 5 000 subscribers as about three times the
// memory the subscribers themselves hold (`meridian bench`, "no forced
// GC"). So once MemoryReleaseUpgrades upgrades have happened since the
// last release and no handshake has been in flight for releaseQuiet, the
// edge collects and returns free memory to the OS once
// (debug.FreeOSMemory: a full collection, milliseconds at this heap size,
// and a scavenge). A steady trickle of connections never goes quiet and
// never triggers it; the allocations it makes run the collector anyway.

// releaseQuiet is how long the handshakes must have been quiet; the burst
// is checked this often too.
const releaseQuiet = time.Second

// releaseState counts the upgrades since the last release.
type releaseState struct {
	upgrades    atomic.Int64
	lastUpgrade atomic.Int64 // Edge.mono of the latest
}

// noteUpgrade counts a WebSocket upgrade for the release.
func (e *Edge) noteUpgrade() {
	e.rel.upgrades.Add(1)
	e.rel.lastUpgrade.Store(e.mono())
}

// releaseLoop checks for a finished burst every releaseQuiet until stop.
func (e *Edge) releaseLoop(stop <-chan struct{}) {
	if e.cfg.MemoryReleaseUpgrades < 0 {
		return
	}
	t := time.NewTicker(releaseQuiet)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			e.maybeRelease()
		}
	}
}

// maybeRelease returns free memory to the OS if a burst of upgrades is
// over, and reports whether it did.
func (e *Edge) maybeRelease() bool {
	n := e.rel.upgrades.Load()
	switch {
	case e.cfg.MemoryReleaseUpgrades < 0 || n < int64(e.cfg.MemoryReleaseUpgrades):
		return false
	case len(e.hsSem) > 0: // handshakes in flight: the burst goes on
		return false
	case time.Duration(e.mono()-e.rel.lastUpgrade.Load()) < releaseQuiet:
		return false
	}
	e.rel.upgrades.Add(-n)
	start := time.Now()
	debug.FreeOSMemory()
	e.m.memoryReleases.Inc()
	e.log.Debug("returned free memory to the OS after a burst of upgrades", "upgrades", n, "took", time.Since(start))
	return true
}
