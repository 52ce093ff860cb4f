package collector

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBadLineLogEvery is the least time between two log lines about
// unparseable access-log lines; the ones in between are only counted.
const DefaultBadLineLogEvery = 10 * time.Second

// LineStats counts what a line-reading source did with its input; the
// collector exports them as metrics.
type LineStats struct {
	Parsed      atomic.Uint64 // lines counted as requests
	Unparseable atomic.Uint64 // lines skipped because they could not be parsed
	Rotations   atomic.Uint64 // rotations and truncations followed
	Lost        atomic.Uint64 // checkpointed files that were gone on restart
}

// rateLimitedLog logs unparseable lines at most once per interval, saying
// how many were suppressed in between, so a gateway writing a format we do
// not read produces a handful of log lines, not one per request.
type rateLimitedLog struct {
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

func newRateLimitedLog(log *slog.Logger, now func() time.Time, every time.Duration) *rateLimitedLog {
	return &rateLimitedLog{log: log, now: now, every: every}
}

// maxLoggedLine bounds how much of a bad line is logged.
const maxLoggedLine = 200

func (r *rateLimitedLog) note(line []byte, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		return
	}
	if len(line) > maxLoggedLine {
		line = line[:maxLoggedLine]
	}
	r.log.Warn("skipping an unparseable line", "line", string(line), "err", err, "suppressed_since_last", r.suppressed)
	r.last, r.suppressed = now, 0
}
