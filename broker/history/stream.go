package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

	// MaxRefillLag bounds how long after its own time a snapshot may be
	// stored: the aggregator refills the seconds it published live without
	// JetStream quorum once quorum returns (proto.RefillSubject), at most
	// this late. The stream is in store order, which then is not time order;
	// readers of a time range read this far past its end in store time.
	MaxRefillLag = 20 * time.Minute
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
	name, description  string
	subjects           []string
	maxAge, duplicates time.Duration
	transform          *jetstream.SubjectTransformConfig
}

var (
	// The history stream also captures the refill subjects, storing each
	// refilled snapshot under its snapshot subject.
	historySpec = streamSpec{proto.HistoryStream, "Meridian snapshots per scope and second",
		[]string{proto.SnapshotSubjectAll, proto.RefillSubjectAll}, DefaultMaxAge, DuplicateWindow,
		&jetstream.SubjectTransformConfig{Source: proto.RefillSubjectAll, Destination: proto.SnapshotSubjectAll}}
	rollupSpec = streamSpec{proto.RollupStream, "Meridian 1-minute rollups per scope",
		[]string{proto.RollupSubjectAll}, DefaultRollupMaxAge, RollupDuplicateWindow, nil}
)

// EnsureStream creates proto.HistoryStream, capturing proto.SnapshotSubjectAll
// in file storage, or updates it to cfg when it exists. A replicated stream
// is ensured once it has a leader (ErrNoLeader until then); Condition and
// Transient tell a caller what an error means and whether to retry soon.
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
	want := jetstream.StreamConfig{
		Name:        spec.name,
		Description: spec.description,
		Subjects:    spec.subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  spec.duplicates,

		SubjectTransform: spec.transform,
	}
	// Read first: an update, even to the same configuration, is a proposal
	// through the meta leader answered by the stream's leader, and takes
	// seconds on a cluster that has just elected them; every start and
	// every write failure ensures again, and mostly finds the stream as
	// wanted.
	s, err := js.Stream(ctx, spec.name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another aggregator created it meanwhile.
			s, err = js.UpdateStream(ctx, want)
		}
	case err == nil && !configured(s.CachedInfo().Config, want):
		s, err = js.UpdateStream(ctx, want)
	}
	if err == nil {
		err = answering(ctx, s, cfg.Replicas)
	}
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", spec.name, err)
	}
	return s, nil
}

// configured reports whether the stream's configuration has every field
// ensure sets as wanted.
func configured(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Discard == want.Discard && have.MaxAge == want.MaxAge &&
		have.Storage == want.Storage && have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		(have.SubjectTransform == nil) == (want.SubjectTransform == nil) &&
		(want.SubjectTransform == nil || *have.SubjectTransform == *want.SubjectTransform)
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
// end (a zero end means up to now), oldest first and one per Time, at most
// max (the newest max when there are more). A missing stream yields no
// snapshots.
//
// Store order is time order but for refilled snapshots, which are stored up
// to MaxRefillLag after their time: LoadRange sorts what it reads, and reads
// until the store time passes end by that much.
func LoadRange(ctx context.Context, js jetstream.JetStream, stream, subject string, start, end time.Time, max int) ([]proto.Snapshot, error) {
	if max <= 0 {
		return nil, nil
	}
	// The stream's store time trails the snapshot's own time by the publish
	// latency (by up to MaxRefillLag for a refill); start a little early
	// and filter on the snapshot time.
	from := start.Add(-storeLatency)
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
	var stop time.Time // store time past which nothing of the range can follow
	if !end.IsZero() {
		stop = end.Add(storeLatency + MaxRefillLag)
	}
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
			stored := time.Time{}
			if md, err := msg.Metadata(); err == nil {
				pending, stored = md.NumPending, md.Timestamp
			}
			s, err := proto.DecodeSnapshot(msg.Data())
			if err != nil {
				continue // a corrupt record must not hide the rest of history
			}
			if stored.IsZero() {
				stored = s.Time
			}
			past = past || (!stop.IsZero() && stored.After(stop))
			if s.Time.Before(start) || (!end.IsZero() && s.Time.After(end)) {
				continue
			}
			out = append(out, s)
			if len(out) >= 2*max {
				// Keep the newest max, trimming in chunks rather than per item.
				out = newest(out, max)
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
	return newest(out, max), nil
}

// storeLatency is how long after its own time a live snapshot may be stored.
const storeLatency = 5 * time.Second

// newest sorts snaps by time, keeps the first stored of each time (a second
// is one snapshot; a refill repeats it only past the duplicate window), and
// returns the newest max of them.
func newest(snaps []proto.Snapshot, max int) []proto.Snapshot {
	slices.SortStableFunc(snaps, func(a, b proto.Snapshot) int { return a.Time.Compare(b.Time) })
	snaps = slices.CompactFunc(snaps, func(a, b proto.Snapshot) bool { return a.Time.Equal(b.Time) })
	if len(snaps) > max {
		snaps = append(snaps[:0], snaps[len(snaps)-max:]...)
	}
	return snaps
}
