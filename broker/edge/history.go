package edge

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// historyServer answers include_history and since. It keeps, per scope it
// serves, a Ring of the last HistoryWindow of snapshots: the cluster's from
// the start (backfilled from JetStream once, retried with backoff), other
// scopes' from their first history request (at most MaxHistoryScopes of
// them, least recently used dropped first). Rings are fed by the live
// snapshots, so once backfilled they are complete up to the newest one.
// Ranges older than a ring reach are read from the rollup stream (history)
// or the 1 s history stream (replays).
//
// Everything here that may touch JetStream runs on the history workers,
// never on the poller or a shard. TimeSeries frames are computed at most
// once per scope, parameters and newest snapshot, and shared by every
// client asking meanwhile: a reconnect storm of identical history requests
// costs one computation per second.
type historyServer struct {
	js         jetstream.JetStream
	window     time.Duration
	capacity   int // snapshots per ring: one per second of the window
	maxPoints  int
	maxScopes  int // rings besides the cluster's
	maxReplay  int
	now        func() time.Time
	log        *slog.Logger
	loadErrors prometheus.Counter

	mu      sync.Mutex
	scopes  map[proto.Scope]*scopeHistory
	cluster *scopeHistory
	clock   uint64 // LRU clock
}

// scopeHistory is one scope's ring and its caches.
type scopeHistory struct {
	h     *historyServer
	scope proto.Scope
	used  uint64 // LRU clock of the last request; guarded by h.mu

	// ring is replaced whole by a backfill; ringMu makes every read a
	// consistent view and keeps live adds from being lost in the swap.
	ringMu sync.Mutex
	ring   *history.Ring
	gen    atomic.Uint64 // bumped by each backfill (invalidates caches)
	loaded atomic.Bool

	loadMu   sync.Mutex // one backfill at a time
	failedAt time.Time  // the last failed backfill; guarded by loadMu

	// reqMu serialises series computations of this scope, so that
	// concurrent identical requests wait for the first and reuse its frames.
	reqMu      sync.Mutex
	cacheEnd   time.Time
	cacheGen   uint64
	cache      map[seriesKey][]byte
	cacheBytes int
}

type seriesKey struct {
	seconds, points int
	metric          proto.Metric
}

// Backfill timing.
const (
	loadTimeout    = 30 * time.Second
	loadRetryFirst = time.Second
	loadRetryMax   = 30 * time.Second
	// maxCacheBytes bounds a scope's frame cache (it is cleared every
	// second anyway, when the newest snapshot changes): a few dozen
	// default-sized series, a couple of 10000-point ones.
	maxCacheBytes = 1 << 20
	// rollupPeriod is the span of one rollup.
	rollupPeriod = time.Minute
)

// endOfTime is a time after every snapshot.
var endOfTime = time.Unix(math.MaxInt32, 0)

func newHistoryServer(cfg *Config, js jetstream.JetStream, log *slog.Logger, loadErrors prometheus.Counter) *historyServer {
	h := &historyServer{
		js:         js,
		window:     cfg.HistoryWindow,
		capacity:   max(int(cfg.HistoryWindow/time.Second), 1),
		maxPoints:  cfg.HistoryPoints,
		maxScopes:  cfg.MaxHistoryScopes,
		maxReplay:  cfg.MaxReplaySnapshots,
		now:        cfg.Now,
		log:        log,
		loadErrors: loadErrors,
		scopes:     make(map[proto.Scope]*scopeHistory),
	}
	h.cluster = h.newScope(proto.ClusterScope())
	h.scopes[h.cluster.scope] = h.cluster
	return h
}

func (h *historyServer) newScope(scope proto.Scope) *scopeHistory {
	return &scopeHistory{h: h, scope: scope, ring: history.NewRing(h.capacity)}
}

// add records a live snapshot in its scope's ring, if the scope has one.
func (h *historyServer) add(s proto.Snapshot) {
	h.mu.Lock()
	sh := h.scopes[s.Scope]
	h.mu.Unlock()
	if sh != nil {
		sh.ringMu.Lock()
		sh.ring.Add(s)
		sh.ringMu.Unlock()
	}
}

// scope returns the history of scope, creating its ring (empty, fed live
// from now on, not backfilled yet) when needed, and evicting the least
// recently used ring beyond MaxHistoryScopes.
func (h *historyServer) scope(scope proto.Scope) *scopeHistory {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clock++
	sh := h.scopes[scope]
	if sh == nil {
		if len(h.scopes)-1 >= h.maxScopes {
			var lru *scopeHistory
			for _, c := range h.scopes {
				if c != h.cluster && (lru == nil || c.used < lru.used) {
					lru = c
				}
			}
			if lru != nil {
				delete(h.scopes, lru.scope)
			}
		}
		sh = h.newScope(scope)
		h.scopes[scope] = sh
	}
	sh.used = h.clock
	return sh
}

// drop forgets scope's ring (never the cluster's): the edge stopped
// following the scope, so the ring would miss what comes next. A later
// history request starts a new one, backfilled from JetStream.
func (h *historyServer) drop(scope proto.Scope) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sh := h.scopes[scope]; sh != nil && sh != h.cluster {
		delete(h.scopes, scope)
	}
}

// rings is the number of scopes whose history is held in memory.
func (h *historyServer) rings() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.scopes)
}

// loadLoop backfills the cluster ring, retrying with backoff until it
// succeeds or ctx ends. Live data is served meanwhile.
func (h *historyServer) loadLoop(ctx context.Context) {
	wait := loadRetryFirst
	for {
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		err := h.cluster.backfill(lctx, time.Time{}, false)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		h.log.Warn("load history; serving live data only until it succeeds", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, loadRetryMax)
	}
}

// errBackoff is returned by backfill while a recent failure is respected.
var errBackoff = fmt.Errorf("backfill failed less than %s ago", loadRetryFirst)

// backfill loads the window ending at anchor (zero: now) from the history
// stream into a fresh ring, merges what arrived live meanwhile, and swaps
// it in. It does nothing once loaded; with backoff set it also does nothing
// within loadRetryFirst of a failure.
func (sh *scopeHistory) backfill(ctx context.Context, anchor time.Time, backoff bool) error {
	h := sh.h
	sh.loadMu.Lock()
	defer sh.loadMu.Unlock()
	if sh.loaded.Load() {
		return nil
	}
	if backoff && !sh.failedAt.IsZero() && h.now().Sub(sh.failedAt) < loadRetryFirst {
		return errBackoff
	}
	if anchor.IsZero() {
		anchor = h.now()
	}
	snaps, err := history.LoadRange(ctx, h.js, proto.HistoryStream, proto.SnapshotSubject(sh.scope),
		anchor.Add(-h.window), time.Time{}, h.capacity)
	if err != nil {
		sh.failedAt = h.now()
		h.loadErrors.Inc()
		return fmt.Errorf("backfill history of %s: %w", sh.scope, err)
	}
	// Built apart, in order (appends are O(1)); the few live snapshots
	// held so far are newer and append as well.
	fresh := history.NewRing(h.capacity)
	for _, s := range snaps {
		fresh.Add(s)
	}
	sh.ringMu.Lock()
	for _, s := range sh.ring.Range(time.Time{}, endOfTime) {
		fresh.Add(s)
	}
	sh.ring = fresh
	sh.ringMu.Unlock()
	sh.gen.Add(1)
	sh.loaded.Store(true)
	return nil
}

// ensure backfills sh for a request; a failure is logged and the request
// served from what the ring holds (the live snapshots since its creation).
func (h *historyServer) ensure(ctx context.Context, sh *scopeHistory, anchor time.Time) {
	if sh.loaded.Load() {
		return
	}
	if err := sh.backfill(ctx, anchor, true); err != nil && err != errBackoff {
		h.log.Warn("backfill history for a request; serving what is in memory", "scope", sh.scope.String(), "err", err)
	}
}

// view copies the ring's snapshots with Time >= from, and reports whether
// the ring also holds older ones, which proves that it holds everything
// after from that the edge received.
func (sh *scopeHistory) view(from time.Time) (snaps []proto.Snapshot, older bool) {
	sh.ringMu.Lock()
	defer sh.ringMu.Unlock()
	snaps = sh.ring.Range(from, endOfTime)
	return snaps, sh.ring.Len() > len(snaps)
}

// newest is the time of the ring's newest snapshot, or zero.
func (sh *scopeHistory) newest() time.Time {
	sh.ringMu.Lock()
	defer sh.ringMu.Unlock()
	if s, ok := sh.ring.Latest(); ok {
		return s.Time
	}
	return time.Time{}
}

// series returns one TimeSeries frame per metric of set, in wire order:
// the last seconds ending at the scope's newest snapshot (in the ring, else
// anchor, else now), in at most points points (capped at HistoryPoints).
func (h *historyServer) series(ctx context.Context, sh *scopeHistory, anchor time.Time, seconds, points int, set proto.MetricSet) ([][]byte, error) {
	end := sh.newest()
	if end.IsZero() {
		end = anchor
	}
	if end.IsZero() {
		end = h.now().UTC().Truncate(time.Second)
	}
	span := time.Duration(seconds) * time.Second
	start := end.Add(-span)
	points = min(points, h.maxPoints)
	gen := sh.gen.Load()

	sh.reqMu.Lock()
	defer sh.reqMu.Unlock()
	if !end.Equal(sh.cacheEnd) || gen != sh.cacheGen || sh.cache == nil {
		sh.cache, sh.cacheBytes = make(map[seriesKey][]byte), 0
		sh.cacheEnd, sh.cacheGen = end, gen
	}
	var snaps []proto.Snapshot
	fetched := false
	out := make([][]byte, 0, set.Len())
	for _, m := range set.Metrics() {
		key := seriesKey{seconds: seconds, points: points, metric: m}
		if f, ok := sh.cache[key]; ok {
			out = append(out, f)
			continue
		}
		if !fetched {
			var err error
			if snaps, err = h.rangeData(ctx, sh, start, end, span); err != nil {
				return nil, err
			}
			fetched = true
		}
		pts := history.Series(snaps, m, start, end, points)
		f := textFrame(func(b []byte) []byte { return proto.AppendTimeSeriesEvent(b, m, pts) })
		if sh.cacheBytes+len(f) <= maxCacheBytes {
			sh.cache[key] = f
			sh.cacheBytes += len(f)
		}
		out = append(out, f)
	}
	return out, nil
}

// rangeData returns the snapshots for a series over [start, end]: the
// ring's when the span is within the in-memory window (or the ring reaches
// back to start); otherwise the one-minute rollups for what precedes the
// ring, followed by the ring's. With nothing in memory, all from rollups.
func (h *historyServer) rangeData(ctx context.Context, sh *scopeHistory, start, end time.Time, span time.Duration) ([]proto.Snapshot, error) {
	mem, older := sh.view(start)
	mem = clipAfter(mem, end)
	if len(mem) > 0 && (span <= h.window || older) {
		return mem, nil
	}
	// A rollup stamped T holds the minute [T, T+1m): take those that end
	// where the ring begins, and the one before start, which the first
	// bucket's mean response time is computed from.
	upTo := end
	if len(mem) > 0 {
		upTo = mem[0].Time.Add(-rollupPeriod)
	}
	from := start.Add(-rollupPeriod)
	if upTo.Before(from) {
		return mem, nil
	}
	limit := int(upTo.Sub(from)/rollupPeriod) + 2
	rolls, err := history.LoadRange(ctx, h.js, proto.RollupStream, proto.RollupSubject(sh.scope), from, upTo, limit)
	if err != nil && !noHistory(err) {
		return nil, fmt.Errorf("read rollups of %s: %w", sh.scope, err)
	}
	return append(rolls, mem...), nil
}

// clipAfter drops the snapshots after end.
func clipAfter(snaps []proto.Snapshot, end time.Time) []proto.Snapshot {
	for len(snaps) > 0 && snaps[len(snaps)-1].Time.After(end) {
		snaps = snaps[:len(snaps)-1]
	}
	return snaps
}
