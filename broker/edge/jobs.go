package edge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// Subscriptions that need more than memory. A subscription message is
// applied on the poller at once when it can be: its scope is held live and
// it asks for no history (include_history, since). Otherwise it becomes a
// job for the history workers, a small pool that may block on JetStream:
// they resolve the scope (in history when not seen live), compute the
// TimeSeries, collect the replay, and then, under the connection's lock,
// apply the subscription and queue its frames in one step.
//
// A connection's messages take effect in the order they arrived: once one
// of them waits for a worker, the later ones (and the Error replies to
// invalid ones) queue behind it, at most maxQueuedJobs of them. From the
// moment a subscription with since is read until its replay is queued, no
// live Snapshot is sent on the connection.

// maxQueuedJobs bounds a connection's messages waiting behind a history
// request; more get an Error at once and are dropped.
const maxQueuedJobs = 8

// subJob is a subscription message waiting for its turn.
type subJob struct {
	sub proto.Subscription
	// st is the scope's state, pinned, when it was known at parse time;
	// nil: the worker resolves it.
	st *scopeState
	// reply, when set, is an Error to send in order instead: the message
	// was invalid and changes nothing.
	reply []byte
	// notice is an Error sent right before the subscription applies (the
	// history request was rate limited).
	notice  []byte
	history bool // serve include_history
	replay  bool // serve since; holds live snapshots back until done
}

// connWork is a connection's history state: its rate limit, its queued
// messages and its replay. Allocated on the first history request or
// queued message; guarded by conn.mu.
type connWork struct {
	tokens   float64 // history requests available now (token bucket)
	tokensAt int64   // mono ns tokens was computed at
	jobs     []subJob
	running  bool // a worker owns the connection's jobs, or will
	holds    int  // queued or running since-jobs: live snapshots held back
	// replayedUntil is the last replayed snapshot's time: a live snapshot
	// older than it (the edge received it late) is not sent after it.
	replayedUntil time.Time
	// replayDone tells the shard to count the replay as the snapshot of
	// the current tick: the next live one is due an interval later.
	replayDone bool
}

// jobResult is what a worker prepared for a subscription.
type jobResult struct {
	failure  []byte   // an Error: the history could not be served
	series   [][]byte // TimeSeries frames
	sh       *scopeHistory
	replayed bool // a replay was collected (it may be empty)
	replay   replayResult
	blob     []byte // the replay's frames
}

// workLocked returns c.work, allocating it with a full token bucket.
func (c *conn) workLocked() *connWork {
	if c.work == nil {
		c.work = &connWork{tokens: float64(c.e.cfg.HistoryRequestBurst), tokensAt: c.e.mono()}
	}
	return c.work
}

// busyLocked reports whether messages wait for a worker.
func (c *conn) busyLocked() bool {
	return c.work != nil && (c.work.running || len(c.work.jobs) > 0)
}

// takeTokenLocked spends one history request from the token bucket: one
// earned per HistoryRequestInterval, at most HistoryRequestBurst saved. On
// refusal it returns how long until the next one.
func (c *conn) takeTokenLocked() (bool, time.Duration) {
	cfg := &c.e.cfg
	cw := c.workLocked()
	now := c.e.mono()
	per := float64(cfg.HistoryRequestInterval)
	cw.tokens = min(float64(cfg.HistoryRequestBurst), cw.tokens+float64(now-cw.tokensAt)/per)
	cw.tokensAt = now
	if cw.tokens >= 1 {
		cw.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - cw.tokens) * per))
}

// rateLimitMessage is the Error text for a refused history request.
func (e *Edge) rateLimitMessage(wait time.Duration) string {
	cfg := &e.cfg
	retry := e.cfg.Now().Add(wait)
	if r := retry.Truncate(time.Second); r.Before(retry) {
		retry = r.Add(time.Second)
	}
	return fmt.Sprintf("history request rate limited: a connection may make %g history requests (include_history or since) per minute, "+
		"%d at once; retry after %s (in %ds); the subscription was applied without its history",
		float64(time.Minute)/float64(cfg.HistoryRequestInterval), cfg.HistoryRequestBurst,
		proto.AppendTimestamp(nil, retry), int(math.Ceil(wait.Seconds())))
}

var frameErrBusy = errorFrame(fmt.Sprintf("too many subscription messages are waiting for a history request to be served (at most %d); this one was dropped", maxQueuedJobs))

// subscribe takes a valid subscription message: applied at once when
// memory suffices and nothing waits before it, else queued for a worker.
func (c *conn) subscribe(sub proto.Subscription) {
	e := c.e
	st := e.scopes.pin(sub.Scope)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		if st != nil {
			st.release()
		}
		return
	}
	j := subJob{sub: sub, st: st}
	if sub.IncludeHistory || !sub.Since.IsZero() {
		if ok, wait := c.takeTokenLocked(); ok {
			j.history, j.replay = sub.IncludeHistory, !sub.Since.IsZero()
		} else {
			e.m.historyRateLimited.Inc()
			j.notice = errorFrame(e.rateLimitMessage(wait))
		}
	}
	if st != nil && !j.history && !j.replay && !c.busyLocked() {
		c.applyLocked(&j, nil)
		return
	}
	c.queueLocked(j)
}

// reply sends an Error in order with the connection's queued messages.
func (c *conn) reply(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.state != stateOpen:
	case c.busyLocked():
		c.queueLocked(subJob{reply: frame})
	default:
		c.enqueueLocked(frame, false)
	}
}

// queueLocked appends j to c's jobs and hands c to the workers.
func (c *conn) queueLocked(j subJob) {
	cw := c.workLocked()
	if len(cw.jobs) >= maxQueuedJobs {
		if j.st != nil {
			j.st.release()
		}
		c.e.m.errorsByType[errTypeBusy].Inc()
		c.enqueueLocked(frameErrBusy, false)
		return
	}
	if j.replay {
		cw.holds++
	}
	cw.jobs = append(cw.jobs, j)
	if !cw.running {
		cw.running = true
		c.e.pool.submit(c)
	}
}

// releaseJobsLocked drops the queued jobs of a closed connection.
func (c *conn) releaseJobsLocked() {
	if c.work == nil {
		return
	}
	for i := range c.work.jobs {
		if st := c.work.jobs[i].st; st != nil {
			st.release()
		}
	}
	c.work.jobs = nil
}

// applyLocked makes j the connection's subscription and queues what it
// brought, in this order: the rate-limit notice, the failure Error, the
// TimeSeries, the truncation notice, the replay. It takes over j.st's pin.
func (c *conn) applyLocked(j *subJob, res *jobResult) {
	old := c.scope
	c.scope, j.st = j.st, nil
	if c.scope != old {
		c.staleMark = staleUnarmed // stale notices are per scope
	}
	old.release()
	c.setSubLocked(j.sub)
	if j.notice != nil {
		c.enqueueLocked(j.notice, false)
	}
	if res != nil {
		if res.failure != nil {
			c.enqueueLocked(res.failure, false)
		}
		for _, f := range res.series {
			c.enqueueFrameLocked(outFrame{b: f, kind: frameHist})
		}
		if res.replayed {
			c.queueReplayLocked(j, res)
		}
	}
	if j.replay {
		c.work.holds--
	}
	c.shard.kick(c, opSubChanged)
}

// queueReplayLocked queues a replay, extended by the snapshots that
// arrived live while it was prepared, so that it runs into the live ones.
func (c *conn) queueReplayLocked(j *subJob, res *jobResult) {
	e := c.e
	n := len(res.replay.snaps)
	last := j.sub.Since
	if n > 0 {
		last = res.replay.snaps[n-1].Time
	}
	var more []proto.Snapshot
	if res.sh != nil {
		more, _ = res.sh.view(last.Add(time.Nanosecond))
	}
	if res.replay.truncated {
		e.m.replaysTruncated.Inc()
		msg := truncationMessage(j.sub.Scope, j.sub.Since, e.cfg.MaxReplaySnapshots, append(res.replay.snaps[:n:n], more...))
		c.enqueueLocked(errorFrame(msg), false)
	}
	if n > 0 {
		c.enqueueFrameLocked(outFrame{b: res.blob, kind: frameHist, msgs: uint32(n)})
	}
	if len(more) > 0 {
		c.enqueueFrameLocked(outFrame{b: replayBlob(nil, more, j.sub.SnapshotMetrics()), kind: frameHist, msgs: uint32(len(more))})
		last = more[len(more)-1].Time
	}
	if total := n + len(more); total > 0 {
		e.m.replayed.Add(float64(total))
		c.work.replayedUntil = last
		c.work.replayDone = true
	}
}

// runJob serves one queued message on a worker goroutine.
func (e *Edge) runJob(base context.Context, c *conn, j *subJob) {
	if j.reply != nil {
		c.send(j.reply, false)
		return
	}
	ctx, cancel := context.WithTimeout(base, e.cfg.HistoryTimeout)
	defer cancel()
	if j.st == nil {
		st, err := e.resolveScope(ctx, j.sub.Scope, c.rate)
		if err != nil {
			if errors.Is(err, errLookupRateLimited) {
				e.m.rejected(rejectLookupRate)
			} else {
				e.m.errorsByType[errTypeUnknownScope].Inc()
			}
			// A worker may wait on JetStream: time to list a large
			// cluster's scopes (the handshake's 404 has a second).
			mctx, mcancel := context.WithTimeout(base, e.cfg.HistoryTimeout)
			msg := e.scopeErrorMessage(mctx, j.sub.Scope, c.grantOf(), err)
			mcancel()
			c.mu.Lock()
			if j.replay {
				c.work.holds--
			}
			if c.state == stateOpen {
				c.enqueueLocked(errorFrame(msg), false)
			}
			c.mu.Unlock()
			return
		}
		j.st = st
	}
	var res jobResult
	if j.history || j.replay {
		start := time.Now()
		err := e.serveHistory(ctx, j, &res)
		e.m.historyDuration.Observe(time.Since(start).Seconds())
		if err != nil {
			e.m.historyFailed.Inc()
			e.log.Warn("serve history request", "scope", j.sub.Scope.String(), "err", err)
			res = jobResult{failure: errorFrame(fmt.Sprintf("history unavailable: %v; the subscription was applied without its history", err))}
		} else {
			e.m.historyServed.Inc()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		j.st.release()
		return
	}
	c.applyLocked(j, &res)
}

// serveHistory prepares the TimeSeries and the replay of j, off any lock.
func (e *Edge) serveHistory(ctx context.Context, j *subJob, res *jobResult) error {
	sh := e.hist.scope(j.sub.Scope)
	anchor := j.st.newestTime()
	e.hist.ensure(ctx, sh, anchor)
	res.sh = sh
	if j.history {
		series, err := e.hist.series(ctx, sh, anchor, j.sub.HistorySeconds, j.sub.HistoryPoints, j.sub.Metrics)
		if err != nil {
			return err
		}
		res.series = series
	}
	if j.replay {
		r, err := e.hist.replay(ctx, sh, anchor, j.sub.Since)
		if err != nil {
			return err
		}
		res.replayed, res.replay = true, r
		res.blob = replayBlob(nil, r.snaps, j.sub.SnapshotMetrics())
	}
	return nil
}

// workPool runs the history workers. A connection is in the queue at most
// once (connWork.running), so the queue is bounded by the connections.
type workPool struct {
	e     *Edge
	mu    sync.Mutex
	queue []*conn
	wake  chan struct{}
}

func newWorkPool(e *Edge, workers int) *workPool {
	return &workPool{e: e, wake: make(chan struct{}, workers)}
}

// submit queues c; it never blocks.
func (p *workPool) submit(c *conn) {
	p.mu.Lock()
	p.queue = append(p.queue, c)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // every worker has a wake-up pending: they will see c
	}
}

func (p *workPool) pop() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return nil
	}
	c := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	return c
}

// queued is the number of connections waiting for a worker.
func (p *workPool) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// run is one worker: it serves queued connections until stop; ctx cancels
// the JetStream reads in flight.
func (p *workPool) run(ctx context.Context, stop <-chan struct{}) {
	for {
		for c := p.pop(); c != nil; c = p.pop() {
			p.e.serveJobs(ctx, c)
			select {
			case <-stop:
				return
			default:
			}
		}
		select {
		case <-stop:
			return
		case <-p.wake:
		}
	}
}

// serveJobs runs c's queued jobs in order until none is left.
func (e *Edge) serveJobs(ctx context.Context, c *conn) {
	for {
		c.mu.Lock()
		cw := c.work
		if c.state != stateOpen || len(cw.jobs) == 0 {
			cw.running = false
			c.mu.Unlock()
			return
		}
		j := cw.jobs[0]
		cw.jobs[0] = subJob{}
		cw.jobs = cw.jobs[1:]
		c.mu.Unlock()
		e.runJob(ctx, c, &j)
	}
}
