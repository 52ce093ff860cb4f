package aggregator

import "context"

// The merge state is persisted off the tick: encoding and writing it grows
// with the number of instances (hundreds of milliseconds at 100,000 on a
// busy host), and the tick must publish the cluster and region snapshots of
// every second on time. The tick hands its state copy to stateLoop through
// stateQ and copies the state only when the writer is idle (stateBusy), so
// at large N the state is persisted as often as writing allows rather than
// every second. Failover stays exact: the replay buffer holds every
// instance's last cumulative report, which a new leader re-applies to
// whatever state it reads.

// queueState reports whether the tick should copy the state for the writer
// now, and marks the writer busy if so.
func (a *Aggregator) queueState() bool { return a.stateBusy.CompareAndSwap(false, true) }

// stateLoop writes the states the tick queues until ctx ends. It runs on its
// own goroutine, started and joined by Run before the hand-over; stateMu
// keeps its writes apart from a take-over's read and the hand-over's write.
func (a *Aggregator) stateLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-a.stateQ:
			a.stateMu.Lock()
			a.writeState(ctx, &st)
			a.stateMu.Unlock()
			a.stateBusy.Store(false)
		}
	}
}
