package aggregator

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Live-only publishing. Leadership is a lease in JetStream; when JetStream
// loses quorum nobody can hold one, yet core NATS may still carry every
// report. The aggregator that led when the lease store failed then keeps
// publishing the cluster, region and followed instance snapshots on core
// NATS ("live-only": no acknowledged history writes, no merge-state writes,
// no rollups), so subscribers keep a live view. What it publishes so, and
// the rollups of the minutes meanwhile, it writes into the history once the
// store works again (refill.go).
// It stops as soon as the lease store works again (the next elected leader
// takes over as usual) or it sees another aggregator with a smaller ID
// publish, so that two aggregators that both led around the failure settle
// on one within a second.
//
// Two publishers never make totals go backwards or repeat a second for a
// client: every aggregator's book sees every published snapshot, so none
// publishes a second already published, and each holds its counters at
// the highest published (book.claim); edges, too, drop a snapshot not
// newer than the one they hold.

// PublisherHeader names the aggregator that published a snapshot.
const PublisherHeader = "Meridian-Aggregator"

// yieldFor is how long a snapshot from an aggregator with a smaller ID
// keeps this one from publishing live-only.
const yieldFor = 3 * time.Second

// elected reports whether this aggregator holds the lease (or, without the
// election, was told to lead): the condition for writes that need it.
func (a *Aggregator) elected() bool {
	if a.elector == nil {
		return a.leader.Load()
	}
	return a.elector.Leading()
}

// checkLiveOnly switches live-only publishing on or off for the tick at now.
// It runs on the tick goroutine, before the tick decides what to publish.
func (a *Aggregator) checkLiveOnly(now time.Time) {
	if a.elector == nil {
		return
	}
	want := !a.elector.Leading() && (a.active.Load() || a.liveOnly.Load()) &&
		a.elector.StoreUnavailable() && now.UnixNano() >= a.yieldUntil.Load()
	if a.liveOnly.Swap(want) == want {
		return
	}
	if want {
		// Not worded like the elector's "lease store unavailable" line, which
		// says it once per outage; this one says what the aggregator does.
		a.log.Warn("publishing live-only: live snapshots without the lease until the store works again (no state writes; history and rollups refilled then)",
			"refill_window", a.cfg.RefillWindow)
	} else {
		a.log.Info("stopped publishing live-only")
	}
}

// noteSnapshotPublisher is called for every published snapshot seen.
func (a *Aggregator) noteSnapshotPublisher(msg *nats.Msg) {
	if p := msg.Header.Get(PublisherHeader); p != "" && p < a.cfg.ID {
		a.yieldUntil.Store(a.cfg.Now().Add(yieldFor).UnixNano())
	}
}
