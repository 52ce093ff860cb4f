package main

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// slowConsumerLogEvery spaces the log lines about one subscription being a
// slow consumer: nats.go reports every episode (the subscription's buffer
// filled, then drained), which under sustained overload is many a second.
const slowConsumerLogEvery = time.Minute

// natsErrorLog logs a connection's asynchronous errors as structured lines:
// a slow consumer once per subscription family (slowConsumerFamily) and
// slowConsumerLogEvery, with the episodes and the messages dropped since
// the last line; anything else as it comes. It replaces nats.go's default handler, which prints an
// unstructured line per episode. Safe for concurrent use.
type natsErrorLog struct {
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex
	// per subscription family
	slow map[string]*slowConsumer
}

type slowConsumer struct {
	logged     time.Time
	suppressed int
	sub        *nats.Subscription // the one last logged
	dropped    int                // its Dropped() then
}

// slowConsumerFamily groups subscriptions for the slow-consumer log by
// their subject's first three tokens, so that a role subscribing per
// instance (the edge follows meridian.snapshot.instance.<name>, all into
// one queue that overflows for all at once) logs one line a minute, not
// one per instance.
func slowConsumerFamily(subject string) string {
	dots := 0
	for i := range len(subject) {
		if subject[i] == '.' {
			if dots++; dots == 3 {
				return subject[:i] + ".>"
			}
		}
	}
	return subject
}

func newNATSErrorLog(log *slog.Logger, now func() time.Time) *natsErrorLog {
	return &natsErrorLog{log: log, now: now, slow: map[string]*slowConsumer{}}
}

func (l *natsErrorLog) handle(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub == nil || !errors.Is(err, nats.ErrSlowConsumer) {
		subject := ""
		if sub != nil {
			subject = sub.Subject
		}
		if errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAuthorization) {
			// This role's credentials do not allow what it tried.
			l.log.Error("nats refused an operation: check this role's NATS permissions", "subject", subject, "err", err)
			return
		}
		l.log.Warn("nats asynchronous error", "subject", subject, "err", err)
		return
	}
	dropped, _ := sub.Dropped()
	now := l.now()
	family := slowConsumerFamily(sub.Subject)
	l.mu.Lock()
	sc := l.slow[family]
	if sc == nil {
		sc = &slowConsumer{}
		l.slow[family] = sc
	}
	if !sc.logged.IsZero() && now.Sub(sc.logged) < slowConsumerLogEvery {
		sc.suppressed++
		l.mu.Unlock()
		return
	}
	// dropped: this subscription's drops since the family's last line, all
	// of them when that line was about another subscription.
	episodes, since := sc.suppressed+1, dropped
	if sc.sub == sub {
		since -= sc.dropped
	}
	sc.logged, sc.suppressed, sc.sub, sc.dropped = now, 0, sub, dropped
	l.mu.Unlock()
	l.log.Warn("nats slow consumer: messages dropped", "subject", sub.Subject, "family", family,
		"episodes", episodes, "dropped", since, "dropped_total", dropped, "next_report_after", slowConsumerLogEvery)
}

// countSlowConsumers wraps nc's error handler to count slow-consumer
// episodes, and returns the count for a metric read at scrape time.
func countSlowConsumers(nc *nats.Conn) func() float64 {
	var n atomic.Int64
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			n.Add(1)
		}
		if prev != nil {
			prev(c, sub, err)
		}
	})
	return func() float64 { return float64(n.Load()) }
}
