package scale

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/meridian-metrics/meridian/broker/wsclient"
	"github.com/meridian-metrics/meridian/proto"
)

// The edge's subscribers: real WebSocket clients (broker/wsclient), one
// goroutine each, every one following one scope at the default 1 s. The
// edge delivers a connection's snapshots at t0 + k·1s, t0 being when it sent
// the first one, so the harness connects each at Config.Phase after a
// second and checks the phase it got: then every delivery should carry the
// second just past, Phase after it, and one that carries an older second
// shows a snapshot that was not at the edge in time.

const (
	// dialers bounds the connections being opened at once.
	dialers = 32
	// phaseSlack is how far after Config.Phase a connection's first
	// snapshot may arrive and its phase still count; later ones redial.
	phaseSlack = 250 * time.Millisecond
	// dialAttempts bounds the tries per subscriber (a refused upgrade, an
	// instance the edge does not know yet, a phase off the mark).
	dialAttempts = 8
	// maxSubscriberNotes bounds the faults and error messages kept.
	maxSubscriberNotes = 10
)

// followed is one scope a subscriber follows.
type followed struct {
	Scope proto.Scope
	query string // the URL's query: "", "region=…" or "instance=…"
}

// followedScopes are the cluster, every region and m instances spread over
// the regions.
func followedScopes(n int, regions []string, m int) []followed {
	out := []followed{{Scope: proto.ClusterScope()}}
	for _, r := range regions {
		out = append(out, followed{Scope: proto.RegionScope(r), query: "region=" + url.QueryEscape(r)})
	}
	r := len(regions)
	for j := range max(m, 0) {
		// Spread over the instances, and over the regions (instance i is
		// in region i mod r), so that in sharded mode every shard
		// publishes some.
		i := j*n/m - (j*n/m)%r + j%r
		if i >= n {
			i -= r
		}
		name := InstanceName(regions[i%r], i)
		out = append(out, followed{Scope: proto.InstanceScope(name), query: "instance=" + url.QueryEscape(name)})
	}
	return out
}

// subscribers are the run's WebSocket clients. Their goroutines are owned
// by it and joined by close.
type subscribers struct {
	addr   string
	phase  time.Duration
	scopes []followed
	// attempts bounds the tries per subscriber (dialAttempts).
	attempts int
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu      sync.Mutex
	clients []*wsclient.Client
	window  [2]time.Time
	st      subTally
}

// subTally is what the subscribers saw, under subscribers.mu.
type subTally struct {
	dialFailures int
	firstDialErr string
	phases       []time.Duration
	delivered    int // Snapshots received in the window
	current      int // of those, carrying the second the receipt falls in
	repeats      int // of those, of a second that subscriber already had
	delays       []time.Duration
	errorEvents  int // until the window's end
	errorNotes   []string
	laterErrors  int // after it
	faults       []string
	lost         int // connections that ended before close
}

func newSubscribers(ctx context.Context, addr string, phase time.Duration, scopes []followed) *subscribers {
	ctx, cancel := context.WithCancel(ctx)
	return &subscribers{addr: addr, phase: phase, scopes: scopes, attempts: dialAttempts, ctx: ctx, cancel: cancel}
}

// connect opens k subscribers, subscriber i following scopes[i mod len],
// and starts reading them. It returns once each is connected or has failed
// dialAttempts times (counted, not fatal: the report shows it).
func (s *subscribers) connect(k int) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(dialers, k) {
		wg.Go(func() {
			for i := range next {
				s.dial(i)
			}
		})
	}
	for i := range k {
		select {
		case next <- i:
		case <-s.ctx.Done():
		}
	}
	close(next)
	wg.Wait()
}

// dial connects subscriber i at the phase, retrying refusals and phases
// off the mark.
func (s *subscribers) dial(i int) {
	f := s.scopes[i%len(s.scopes)]
	u := "ws://" + s.addr + "/ws/metrics"
	if f.query != "" {
		u += "?" + f.query
	}
	var lastErr error
	for range s.attempts {
		if err := sleepUntil(s.ctx, nextPhase(time.Now(), s.phase)); err != nil {
			return
		}
		c, first, err := s.open(u)
		if err != nil {
			lastErr = err
			continue
		}
		ph := first.Sub(first.Truncate(time.Second))
		if ph < s.phase || ph > s.phase+phaseSlack {
			_ = c.Close()
			lastErr = fmt.Errorf("first snapshot at %s into its second, want %s to %s", ph, s.phase, s.phase+phaseSlack)
			continue
		}
		s.mu.Lock()
		s.clients = append(s.clients, c)
		s.st.phases = append(s.st.phases, ph)
		s.mu.Unlock()
		s.wg.Go(func() { s.read(c, f.Scope) })
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.dialFailures++
	if s.st.firstDialErr == "" && lastErr != nil {
		s.st.firstDialErr = fmt.Sprintf("%s: %v", f.Scope, lastErr)
	}
}

// open dials u and reads the first event, which must be a Snapshot; it
// returns the moment of its receipt (the connection's phase).
func (s *subscribers) open(u string) (*wsclient.Client, time.Time, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	c, err := wsclient.Dial(ctx, u)
	if err != nil {
		return nil, time.Time{}, err
	}
	ev, err := c.Next(ctx)
	at := time.Now()
	if err == nil && ev.Type != proto.EventSnapshot {
		err = fmt.Errorf("first event is %s %q, not a Snapshot", ev.Type, ev.Message)
	}
	if err != nil {
		_ = c.Close()
		return nil, time.Time{}, err
	}
	return c, at, nil
}

// nextPhase is now when now lies in the first half of the accepted phases
// (so that a dialer opens many connections per second), else the next
// moment at phase past a second.
func nextPhase(now time.Time, phase time.Duration) time.Time {
	t := now.Truncate(time.Second).Add(phase)
	switch {
	case now.Before(t):
		return t
	case now.Sub(t) < phaseSlack/2:
		return now
	}
	return t.Add(time.Second)
}

// read tallies c's events until the subscribers close.
func (s *subscribers) read(c *wsclient.Client, scope proto.Scope) {
	var lastSec int64
	var lastTotal float64
	for {
		ev, err := c.Next(s.ctx)
		at := time.Now()
		if err != nil {
			if s.ctx.Err() == nil {
				s.mu.Lock()
				s.st.lost++
				s.note(&s.st.faults, "%s: connection ended: %v", scope, err)
				s.mu.Unlock()
			}
			return
		}
		s.mu.Lock()
		switch ev.Type {
		case proto.EventSnapshot:
			sec, total := ev.Timestamp.Unix(), ev.Values["requests_total"]
			switch {
			case sec < lastSec:
				s.note(&s.st.faults, "%s: second %d after %d", scope, sec, lastSec)
			case total < lastTotal:
				s.note(&s.st.faults, "%s: requests_total %.0f after %.0f", scope, total, lastTotal)
			}
			if !at.Before(s.window[0]) && at.Before(s.window[1]) {
				s.st.delivered++
				s.st.delays = append(s.st.delays, at.Sub(ev.Timestamp))
				if sec == at.Unix() {
					s.st.current++
				}
				if sec == lastSec {
					s.st.repeats++
				}
			}
			lastSec, lastTotal = max(lastSec, sec), max(lastTotal, total)
		case proto.EventError:
			// Stale-data Errors are expected after the window: a failover
			// stalls the scopes, and once the load stops the instances
			// go silent.
			if at.Before(s.window[1]) {
				s.st.errorEvents++
				s.note(&s.st.errorNotes, "%s: %s", scope, ev.Message)
			} else {
				s.st.laterErrors++
			}
		}
		s.mu.Unlock()
	}
}

func (s *subscribers) note(to *[]string, format string, args ...any) {
	if len(*to) < maxSubscriberNotes {
		*to = append(*to, fmt.Sprintf(format, args...))
	}
}

// setWindow counts the deliveries received in [from, to).
func (s *subscribers) setWindow(from, to time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window = [2]time.Time{from, to}
}

// close ends every connection and joins the readers.
func (s *subscribers) close() {
	s.cancel()
	s.mu.Lock()
	clients := s.clients
	s.mu.Unlock()
	for _, c := range clients {
		_ = c.Close()
	}
	s.wg.Wait()
}

// Subscribers is what the edge's WebSocket subscribers saw.
type Subscribers struct {
	Wanted    int `json:"wanted"`
	Connected int `json:"connected"`
	// DialFailures are subscribers that never connected (FirstDialError
	// says why).
	DialFailures   int    `json:"dial_failures"`
	FirstDialError string `json:"first_dial_error,omitempty"`
	// Scopes is how many scopes they follow: the cluster, the regions and
	// FollowedInstances instances.
	Scopes            int `json:"scopes"`
	FollowedInstances int `json:"followed_instances"`
	// Due is one Snapshot per connected subscriber and second of the
	// window; Delivered those that arrived in it.
	Due       int `json:"due"`
	Delivered int `json:"delivered"`
	// Current are the deliveries that carried the second they arrived in
	// (the newest possible at the phase); Repeats those carrying a second
	// the subscriber already had (the edge repeats the newest snapshot
	// when none newer arrived in time).
	Current int `json:"current"`
	Repeats int `json:"repeats"`
	// Phase is where in the second the connections' ticks fall; Delay is
	// receipt minus the delivered snapshot's second.
	Phase Dist `json:"phase"`
	Delay Dist `json:"delay"`
	// ErrorEvents arrived until the window's end (ErrorNotes quotes a
	// few), ErrorEventsAfter during the failovers and after the load.
	ErrorEvents      int      `json:"error_events"`
	ErrorNotes       []string `json:"error_notes,omitempty"`
	ErrorEventsAfter int      `json:"error_events_after"`
	// Faults are contract violations seen by a client (a second or a
	// total going backwards) and connections lost before the end.
	Faults []string `json:"faults,omitempty"`
	Lost   int      `json:"lost"`
}

// report summarises the tally for a window of seconds whole seconds.
func (s *subscribers) report(wanted, seconds int) Subscribers {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.st
	scopes := s.scopes[:min(len(s.scopes), wanted)]
	instances := 0
	for _, f := range scopes {
		if f.Scope.Kind == proto.ScopeInstance {
			instances++
		}
	}
	return Subscribers{
		Wanted: wanted, Connected: len(st.phases), DialFailures: st.dialFailures, FirstDialError: st.firstDialErr,
		Scopes: len(scopes), FollowedInstances: instances,
		Due: len(st.phases) * seconds, Delivered: st.delivered, Current: st.current, Repeats: st.repeats,
		Phase: distOf(st.phases), Delay: distOf(st.delays),
		ErrorEvents: st.errorEvents, ErrorNotes: st.errorNotes, ErrorEventsAfter: st.laterErrors,
		Faults: st.faults, Lost: st.lost,
	}
}
