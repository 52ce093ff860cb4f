package aggregator

import (
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/proto"
)

// InstanceSnapshots says which instance scopes the leader publishes every
// second. Cluster and region snapshots are always published every second.
type InstanceSnapshots uint8

const (
	// InstanceSnapshotsOnDemand (the default) publishes an instance's
	// snapshots only while an edge announces interest in it on
	// proto.InterestSubject (a client follows it). Every instance still gets
	// its one-minute rollup, so instance history costs one message per
	// instance and minute instead of sixty.
	InstanceSnapshotsOnDemand InstanceSnapshots = iota
	// InstanceSnapshotsAll publishes every instance every second: one
	// message and one history entry per instance and second.
	InstanceSnapshotsAll
)

func (m InstanceSnapshots) String() string {
	switch m {
	case InstanceSnapshotsOnDemand:
		return "on-demand"
	case InstanceSnapshotsAll:
		return "all"
	}
	return fmt.Sprintf("InstanceSnapshots(%d)", uint8(m))
}

func (m InstanceSnapshots) validate() error {
	if m > InstanceSnapshotsAll {
		return fmt.Errorf("InstanceSnapshots %d: want InstanceSnapshotsOnDemand or InstanceSnapshotsAll", uint8(m))
	}
	return nil
}

// ParseInstanceSnapshots parses "on-demand" or "all".
func ParseInstanceSnapshots(s string) (InstanceSnapshots, error) {
	for _, m := range []InstanceSnapshots{InstanceSnapshotsOnDemand, InstanceSnapshotsAll} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("instance snapshots %q: want on-demand or all", s)
}

// maxInterest bounds the instances whose interest is remembered, whatever
// the announcements say; past it new names are ignored until some expire.
const maxInterest = 1 << 20

// interestTable remembers, per instance, until when an edge wants its
// snapshots. Every aggregator keeps one, so that a new leader publishes
// what the edges follow from its first tick. It is safe for concurrent use.
type interestTable struct {
	mu    sync.Mutex
	until map[string]time.Time
	full  bool // maxInterest was reached; logged once per episode
}

func newInterestTable() *interestTable {
	return &interestTable{until: make(map[string]time.Time)}
}

// add records an announcement received at now. It reports whether the
// table had no room for some of its names.
func (t *interestTable) add(in *proto.Interest, now time.Time) (overflow bool) {
	until := now.Add(in.TTL)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, name := range in.Instances {
		prev, ok := t.until[name]
		if !ok && len(t.until) >= maxInterest {
			overflow = true
			continue
		}
		if until.After(prev) {
			t.until[name] = until
		}
	}
	first := overflow && !t.full
	t.full = t.full || overflow
	return first
}

// wanted returns the instances wanted at now, dropping the expired ones.
// The tick calls it once and looks names up in the result.
func (t *interestTable) wanted(now time.Time) map[string]struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]struct{}, len(t.until))
	for name, until := range t.until {
		if until.Before(now) {
			delete(t.until, name)
			continue
		}
		out[name] = struct{}{}
	}
	if len(t.until) < maxInterest {
		t.full = false
	}
	return out
}

func (t *interestTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.until)
}

// onInterest runs on the interest subscription's goroutine.
func (a *Aggregator) onInterest(msg *nats.Msg) {
	now := a.cfg.Now()
	in, err := proto.DecodeInterest(msg.Data)
	if err != nil {
		a.interestBad.Inc()
		if ok, suppressed := a.decodeLog.allow(now); ok {
			a.log.Warn("drop undecodable interest announcement", "err", err, "suppressed", suppressed)
		}
		return
	}
	if a.interest.add(&in, now) {
		a.log.Warn("instance interest table full; ignoring further instances until some expire", "edge", in.Edge, "max", maxInterest)
	}
}

// instanceFilter returns which instance snapshots the tick at now
// publishes: nil for all, or the wanted ones. The merger computes the
// latency quantiles of those only.
func (a *Aggregator) instanceFilter(now time.Time) func(name string) bool {
	if a.cfg.InstanceSnapshots == InstanceSnapshotsAll {
		return nil
	}
	wanted := a.interest.wanted(now)
	return func(name string) bool {
		_, ok := wanted[name]
		return ok
	}
}

func (a *Aggregator) interestCollectors(ns string) []prometheus.Collector {
	a.interestBad = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "aggregator", Name: "interest_decode_errors_total",
		Help: "Interest announcements that could not be decoded or failed validation.",
	})
	return []prometheus.Collector{
		a.interestBad,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "aggregator", Name: "instance_interest",
			Help: "Instances some edge currently follows, whose snapshots are published every second (with --instance-snapshots on-demand).",
		}, func() float64 { return float64(a.interest.len()) }),
	}
}
