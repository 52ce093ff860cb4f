package scale

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// observer watches the cluster and region snapshots as a live subscriber
// does, on core NATS, and checks the exactness contract on them: per scope,
// counters never decrease and a second never repeats. Its callback runs on
// the subscription's goroutine; the harness reads it under mu.
type observer struct {
	mu      sync.Mutex
	latest  map[string]proto.Snapshot // per scope, the newest snapshot seen
	delays  map[string][]time.Duration
	window  [2]int64             // unix seconds [from, to) whose delays are kept
	arrived map[string][]arrival // per scope, in order of receipt
	faults  []string
	// latency compares the window's cluster snapshots with what the
	// simulator sent (nil when its reports carry no histogram).
	latency *LatencySeen
	bad     int // undecodable snapshots
}

type arrival struct {
	Second int64
	At     time.Time
	Total  uint64
}

// maxFaults bounds the contract violations kept for the report.
const maxFaults = 20

func newObserver() *observer {
	return &observer{latest: map[string]proto.Snapshot{}, delays: map[string][]time.Duration{}, arrived: map[string][]arrival{}}
}

func (o *observer) subscribe(nc *nats.Conn) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, subject := range []string{proto.SnapshotSubject(proto.ClusterScope()), proto.SnapshotSubjectPrefix + ".region.*"} {
		sub, err := nc.Subscribe(subject, o.onSnapshot)
		if err != nil {
			return subs, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		// Snapshots of a few scopes a second: generous limits, so that the
		// observer itself never drops one.
		if err := sub.SetPendingLimits(1<<16, 64<<20); err != nil {
			return subs, fmt.Errorf("subscribe to %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

func (o *observer) onSnapshot(msg *nats.Msg) {
	at := time.Now()
	s, err := proto.DecodeSnapshot(msg.Data)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.bad++
		return
	}
	scope := s.Scope.String()
	sec := s.Time.Unix()
	if prev, ok := o.latest[scope]; ok {
		switch {
		case sec <= prev.Time.Unix():
			o.fault("%s: second %d after %d (repeated or backwards)", scope, sec, prev.Time.Unix())
		case s.RequestsTotal < prev.RequestsTotal || s.RequestsSuccess < prev.RequestsSuccess || s.RequestsError < prev.RequestsError:
			o.fault("%s: totals went backwards at second %d: %d after %d", scope, sec, s.RequestsTotal, prev.RequestsTotal)
		}
	}
	o.latest[scope] = s
	if sec >= o.window[0] && sec < o.window[1] {
		kind := "cluster"
		if s.Scope.Kind == proto.ScopeRegion {
			kind = "region"
		}
		o.delays[kind] = append(o.delays[kind], at.Sub(s.Time))
		if kind == "cluster" && o.latency != nil {
			o.latency.compare(&s)
		}
	}
	o.arrived[scope] = append(o.arrived[scope], arrival{Second: sec, At: at, Total: s.RequestsTotal})
}

func (o *observer) fault(format string, args ...any) {
	if len(o.faults) < maxFaults {
		o.faults = append(o.faults, fmt.Sprintf(format, args...))
	}
}

// setWindow keeps the delays of the snapshots of seconds [from, to), and
// compares the cluster's latency in them with want (if it has buckets).
func (o *observer) setWindow(from, to int64, want LatencyWant) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.window = [2]int64{from, to}
	if want.Buckets > 0 {
		o.latency = &LatencySeen{Want: want}
	}
}

// last returns the newest snapshot of scope seen.
func (o *observer) last(scope proto.Scope) (proto.Snapshot, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.latest[scope.String()]
	return s, ok
}

// Dist summarises durations in milliseconds.
type Dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// distOf summarises ds, sorting it in place. Quantiles are nearest-rank.
func distOf(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	slices.Sort(ds)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return msOf(ds[min(max(i, 0), len(ds)-1)])
	}
	return Dist{N: len(ds), P50: q(0.5), P99: q(0.99), Max: msOf(ds[len(ds)-1])}
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
