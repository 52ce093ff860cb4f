package aggregator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// Instance rollups are written off the tick, paced, by their own writer.
//
// A minute's rollups all close at the first tick of the next minute: one per
// instance, 100,000 at 100,000 instances. Published by the tick through the
// snapshots' JetStream context, they filled its pending-ack budget, so the
// tick stalled and the next seconds' cluster and region snapshots waited
// behind them (or went out unacknowledged). Now the tick publishes only the
// cluster and region rollups (a few) with the snapshots, and hands the
// instance rollups to rollupWriter, which writes them over the next
// Config.RollupSpread through a JetStream context of its own, at most
// Config.RollupMaxPending unacknowledged at a time (flow control by acks),
// retrying any that fail or time out (message ids make a retry store once).
//
// Exactly once across a failover: the tick takes a scope's pending rollups
// out of the book as it queues them (rolledUp), as it did when it published
// them; a follower keeps each rollup it computed until it sees it published
// on NATS, so a new leader queues exactly the ones the old one had not
// published yet. The writer stops while this aggregator does not lead and
// resumes should it lead again; a rollup both leaders published is stored
// once by its message id.
//
// Bound: a queued rollup older than pendingKeep (3 minutes, well inside the
// rollup stream's duplicate window) is dropped unwritten, counted in
// rollups_dropped_total and logged once a minute; that happens only when the
// store accepts fewer rollups than instances per minute for minutes on end.
// So the queue holds at most the rollups of ~4 minutes of instances
// (rollup_queue_length).

const (
	// DefaultRollupSpread is how long after its minute closes the instance
	// rollups of a minute are written over: within the minute, leaving the
	// rest of it for retries before the next minute's.
	DefaultRollupSpread = 40 * time.Second
	// DefaultRollupMaxPending bounds the instance rollups written and not
	// yet acknowledged.
	DefaultRollupMaxPending = 512
	// rollupStep is the writer's pacing period.
	rollupStep = 100 * time.Millisecond
)

// rollupQueue is what the tick hands to the writer: FIFO, with the time by
// which it should be written out. It has its own lock.
type rollupQueue struct {
	mu       sync.Mutex
	q        []proto.Snapshot
	deadline time.Time // monotonic: pacing is a rate, not a time of day
	kick     chan struct{}
	bytes    int64 // rollupBytes of q
	dropped  uint64
	retries  uint64
}

// rollupBytes is the memory a queued rollup holds, near enough: the
// snapshot and its histogram's buckets.
func rollupBytes(r *proto.Snapshot) int64 {
	n := int64(unsafe.Sizeof(*r))
	if r.LatencyHistogram != nil {
		n += int64(cap(r.LatencyHistogram.Buckets)) * int64(unsafe.Sizeof(proto.HistBucket{}))
	}
	return n
}

func sumRollupBytes(rs []proto.Snapshot) int64 {
	var n int64
	for i := range rs {
		n += rollupBytes(&rs[i])
	}
	return n
}

func newRollupQueue() *rollupQueue { return &rollupQueue{kick: make(chan struct{}, 1)} }

// add queues what fill appends to the queue, to be written by now+spread.
// fill appends in place: at 100,000 instances a copy more of every rollup
// was a tenth of the boundary tick.
func (q *rollupQueue) add(fill func([]proto.Snapshot) []proto.Snapshot, now time.Time, spread time.Duration) {
	q.mu.Lock()
	n := len(q.q)
	q.q = fill(q.q)
	added := len(q.q) > n
	q.bytes += sumRollupBytes(q.q[n:])
	if d := now.Add(spread); added && d.After(q.deadline) {
		q.deadline = d
	}
	q.mu.Unlock()
	if !added {
		return
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *rollupQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.q)
}

func (q *rollupQueue) size() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// take removes and returns up to the share of the queue due by now (at
// least one, at most limit), after dropping the ones older than oldest
// (unix seconds); it reports how many it dropped.
func (q *rollupQueue) take(dst []proto.Snapshot, now time.Time, oldest int64, limit int) ([]proto.Snapshot, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dropped := 0
	for dropped < len(q.q) && q.q[dropped].Time.Unix() < oldest {
		dropped++
	}
	q.bytes -= sumRollupBytes(q.q[:dropped])
	clear(q.q[:dropped])
	q.q = q.q[dropped:]
	q.dropped += uint64(dropped)
	if len(q.q) == 0 {
		q.q, q.bytes = nil, 0 // let a burst's array go
		return dst, dropped
	}
	n := len(q.q)
	if left := q.deadline.Sub(now); left > rollupStep {
		// Evenly over the time left: n * step / left, rounded up.
		n = int((int64(n)*int64(rollupStep) + int64(left) - 1) / int64(left))
	}
	n = max(1, min(n, limit))
	dst = append(dst, q.q[:n]...)
	q.bytes -= sumRollupBytes(q.q[:n])
	clear(q.q[:n]) // drop the histograms' references
	q.q = q.q[n:]
	return dst, dropped
}

// retry puts rollups back at the head of the queue.
func (q *rollupQueue) retry(rs []proto.Snapshot) {
	if len(rs) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.retries += uint64(len(rs))
	q.bytes += sumRollupBytes(rs)
	q.q = append(append(make([]proto.Snapshot, 0, len(rs)+len(q.q)), rs...), q.q...)
}

func (q *rollupQueue) counts() (dropped, retries uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped, q.retries
}

// rollupLoop writes the queued instance rollups until ctx ends. It runs on
// its own goroutine, started and joined by Run.
func (a *Aggregator) rollupLoop(ctx context.Context) {
	step := time.NewTicker(rollupStep)
	defer step.Stop()
	var batch []proto.Snapshot
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.rollq.kick:
		case <-step.C:
		}
		for a.writeRollups(ctx, &batch) {
		}
	}
}

// writeRollups writes one batch, the share of the queue due now, waits for
// its acks and queues again the ones that failed. It reports whether it
// wrote all of a full batch, so more may be due at once.
func (a *Aggregator) writeRollups(ctx context.Context, batch *[]proto.Snapshot) bool {
	if !a.mayPublish() {
		return false
	}
	if a.liveOnly.Load() {
		// No JetStream: the refill writes them once the store is back.
		a.rollq.mu.Lock()
		rolls := a.rollq.q
		a.rollq.q, a.rollq.bytes = nil, 0
		a.rollq.mu.Unlock()
		a.keepRollups(rolls, a.cfg.Now())
		return false
	}
	limit := a.cfg.RollupMaxPending
	b, dropped := a.rollq.take((*batch)[:0], time.Now(), a.cfg.Now().Add(-pendingKeep).Unix(), limit)
	*batch = b
	if dropped > 0 {
		if ok, suppressed := a.rollupLog.allow(a.cfg.Now()); ok {
			a.log.Warn("instance rollups dropped unwritten: older than the rollup stream can deduplicate a retry",
				"dropped", dropped, "suppressed", suppressed, "after", pendingKeep)
		}
	}
	if len(b) == 0 {
		return false
	}
	futures := make([]jetstream.PubAckFuture, len(b))
	var failed []proto.Snapshot
	for i := range b {
		r := &b[i]
		data, err := r.Encode()
		if err != nil { // cannot happen for a rollup the book built; never retried
			a.writeFailed(fmt.Errorf("encode rollup %s: %w", messageID(r), err))
			continue
		}
		msg := &nats.Msg{Subject: proto.RollupSubject(r.Scope), Data: data, Header: nats.Header{}}
		msg.Header.Set(PublisherHeader, a.cfg.ID)
		futures[i], err = a.rollJS.PublishMsgAsync(msg, jetstream.WithMsgID(messageID(r)), jetstream.WithRetryAttempts(0))
		if err != nil {
			failed = append(failed, b[i])
			a.writeFailed(fmt.Errorf("publish rollup %s: %w", messageID(r), err))
		}
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			a.metrics.rollups.Inc()
		case err := <-f.Err():
			failed = append(failed, b[i])
			a.writeFailed(fmt.Errorf("write rollup %s: %w", messageID(&b[i]), err))
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
				select {
				case a.recheck <- struct{}{}:
				default:
				}
			}
		case <-ctx.Done():
			return false
		}
	}
	a.rollq.retry(failed)
	clear(b) // drop the histograms' references
	return len(failed) == 0 && len(b) == limit
}
