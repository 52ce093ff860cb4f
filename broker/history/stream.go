package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for StreamConfig.
const (
	// DefaultReplicas suits a single NATS node; a cluster wants 3.
	DefaultReplicas = 1
	DefaultMaxAge   = 24 * time.Hour
	// DuplicateWindow is how long the history stream remembers Nats-Msg-Id
	// values: a snapshot re-published for the same scope and second inside it
	// is stored once.
	DuplicateWindow = 2 * time.Minute

	// DefaultRollupMaxAge is how long one-minute rollups are kept by default.
	DefaultRollupMaxAge = 30 * 24 * time.Hour
	// RollupDuplicateWindow is how long the rollup stream remembers message
	// ids ("<scope>@<minute unix>"); a new leader re-publishes the rollups it
	// cannot tell were published for a few minutes, well inside it.
	RollupDuplicateWindow = 10 * time.Minute
)

// StreamConfig configures the history stream or the rollup stream. Zero
// fields take defaults.
type StreamConfig struct {
	// Replicas is the stream's replication factor: DefaultReplicas (1) on a
	// single node, 3 in a cluster.
	Replicas int
	// MaxAge is how long messages are kept. Default DefaultMaxAge for the
	// history stream, DefaultRollupMaxAge for the rollup stream.
	MaxAge time.Duration
}

// Validate rejects negative numbers; zero fields take the defaults.
func (c StreamConfig) Validate() error {
	return service.First(
		service.NonNegative("Replicas", c.Replicas),
		service.NonNegative("MaxAge", c.MaxAge),
	)
}

// streamSpec is what distinguishes the two streams.
type streamSpec struct {
	name, description, subjects string
	maxAge, duplicates          time.Duration
}

var (
	historySpec = streamSpec{proto.HistoryStream, "Meridian snapshots per scope and second",
		proto.SnapshotSubjectAll, DefaultMaxAge, DuplicateWindow}
	rollupSpec = streamSpec{proto.RollupStream, "Meridian 1-minute rollups per scope",
		proto.RollupSubjectAll, DefaultRollupMaxAge, RollupDuplicateWindow}
)

// EnsureStream creates proto.HistoryStream, capturing proto.SnapshotSubjectAll
// in file storage, or updates it to cfg when it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx, js, historySpec, cfg)
}

// EnsureRollupStream creates proto.RollupStream, capturing
// proto.RollupSubjectAll in file storage, or updates it to cfg when it
// exists.
func EnsureRollupStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx, js, rollupSpec, cfg)
}

func ensure(ctx context.Context, js jetstream.JetStream, spec streamSpec, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", spec.name, err)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = spec.maxAge
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        spec.name,
		Description: spec.description,
		Subjects:    []string{spec.subjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  spec.duplicates,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", spec.name, err)
	}
	return s, nil
}

// loadBatch is how many messages one pull asks for while loading.
const loadBatch = 512

// Load reads the snapshots of scope with Time >= since from the history
// stream, oldest first, at most max (the newest max when there are more). A
// missing stream is not an error: there is simply no history yet.
func Load(ctx context.Context, js jetstream.JetStream, scope proto.Scope, since time.Time, max int) ([]proto.Snapshot, error) {
	return LoadRange(ctx, js, proto.HistoryStream, proto.SnapshotSubject(scope), since, time.Time{}, max)
}

// LoadRange reads the snapshots on subject in stream with start <= Time <=
// end (a zero end means up to now), oldest first, at most max (the newest
// max when there are more). A missing stream yields no snapshots.
func LoadRange(ctx context.Context, js jetstream.JetStream, stream, subject string, start, end time.Time, max int) ([]proto.Snapshot, error) {
	if max <= 0 {
		return nil, nil
	}
	// The stream's store time trails the snapshot's own time by the publish
	// latency; start a little early and filter on the snapshot time.
	from := start.Add(-5 * time.Second)
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s from %s: create consumer: %w", subject, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s from %s: consumer info: %w", subject, stream, err)
	}
	pending := info.NumPending
	out := make([]proto.Snapshot, 0, min(int(pending), 2*max))
	for pending > 0 {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(int(min(pending, loadBatch)), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("load %s from %s: fetch: %w", subject, stream, err)
		}
		got, past := 0, false
		for msg := range batch.Messages() {
			got++
			if md, err := msg.Metadata(); err == nil {
				pending = md.NumPending
			}
			s, err := proto.DecodeSnapshot(msg.Data())
			if err != nil || s.Time.Before(start) {
				continue // a corrupt record must not hide the rest of history
			}
			if !end.IsZero() && s.Time.After(end) {
				// Store order follows snapshot time up to the publish latency.
				past = past || s.Time.After(end.Add(5*time.Second))
				continue
			}
			out = append(out, s)
			if len(out) >= 2*max {
				// Keep the newest max, trimming in chunks rather than per item.
				out = append(out[:0], out[len(out)-max:]...)
			}
		}
		cancel()
		if err := batch.Error(); err != nil && got == 0 {
			return nil, fmt.Errorf("load %s from %s: fetch: %w", subject, stream, err)
		}
		if got == 0 || past {
			break // nothing more arrived within the wait, or the range is done
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out, nil
}
