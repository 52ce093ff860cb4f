package edge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/proto"
)

// historyServer serves include_history from memory: a Ring of the last
// HistoryWindow of cluster snapshots, fed by live snapshots and backfilled
// once from JetStream. The TimeSeries frames are computed at most once per
// newest snapshot (and backfill) and shared by every client asking in the
// meantime, so a reconnect storm of history requests costs one computation
// per second, not one per client.
type historyServer struct {
	ring   *history.Ring
	window time.Duration
	points int
	now    func() time.Time
	loaded atomic.Bool
	gen    atomic.Uint64 // bumped by the backfill

	mu       sync.Mutex
	cacheEnd time.Time
	cacheGen uint64
	cache    [proto.NumMetrics][]byte
}

// Backoff of the history load retries.
const (
	loadTimeout    = 30 * time.Second
	loadRetryFirst = time.Second
	loadRetryMax   = 30 * time.Second
)

func newHistoryServer(window time.Duration, points int, now func() time.Time) *historyServer {
	return &historyServer{
		ring:   history.NewRing(max(int(window/time.Second), 1)),
		window: window,
		points: points,
		now:    now,
	}
}

// add records a live cluster snapshot.
func (h *historyServer) add(s proto.Snapshot) { h.ring.Add(s) }

// loadLoop backfills the ring from JetStream, retrying with backoff until
// it succeeds or ctx ends. Live data is served meanwhile.
func (h *historyServer) loadLoop(ctx context.Context, nc *nats.Conn, log *slog.Logger, failures prometheus.Counter) {
	wait := loadRetryFirst
	for {
		err := h.load(ctx, nc)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			return
		}
		failures.Inc()
		log.Warn("load history; serving live data only until it succeeds", "err", err, "retry_in", wait)
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

func (h *historyServer) load(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("create JetStream context: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	snaps, err := history.Load(ctx, js, proto.ClusterScope(), h.now().Add(-h.window), int(h.window/time.Second)+1)
	if err != nil {
		return err
	}
	for _, s := range snaps {
		h.ring.Add(s)
	}
	h.loaded.Store(true)
	h.gen.Add(1)
	return nil
}

// frames returns one TimeSeries frame per metric of set, in wire order:
// the last window up to the newest snapshot held, at most points points.
func (h *historyServer) frames(set proto.MetricSet) [][]byte {
	end := h.now()
	if s, ok := h.ring.Latest(); ok {
		end = s.Time
	}
	gen := h.gen.Load()
	h.mu.Lock()
	defer h.mu.Unlock()
	if !end.Equal(h.cacheEnd) || gen != h.cacheGen {
		h.cache = [proto.NumMetrics][]byte{}
		h.cacheEnd, h.cacheGen = end, gen
	}
	var snaps []proto.Snapshot
	fetched := false
	out := make([][]byte, 0, set.Len())
	for _, m := range set.Metrics() {
		if h.cache[m] == nil {
			if !fetched {
				start := end.Add(-h.window)
				snaps, fetched = h.ring.Range(start, end), true
			}
			points := history.Series(snaps, m, end.Add(-h.window), end, h.points)
			h.cache[m] = textFrame(func(b []byte) []byte { return proto.AppendTimeSeriesEvent(b, m, points) })
		}
		out = append(out, h.cache[m])
	}
	return out
}
