package aggregator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// Rollup stream defaults. The leader publishes one rollup per scope and
// minute on proto.RollupSubject(scope), with Nats-Msg-Id
// "<scope>@<minute unix>", and the stream proto.RollupStream keeps them for
// RollupConfig.MaxAge.
const (
	// DefaultRollupMaxAge is how long rollups are kept by default.
	DefaultRollupMaxAge = 30 * 24 * time.Hour
	// RollupDuplicateWindow is how long the rollup stream remembers message
	// ids. A new leader re-publishes the rollups it cannot tell were
	// published for up to pendingKeep, well inside it.
	RollupDuplicateWindow = 10 * time.Minute
)

// RollupConfig configures the rollup stream. Zero fields take defaults.
type RollupConfig struct {
	// Replicas is the stream's replication factor: 1 (default) on a single
	// node, 3 in a cluster.
	Replicas int
	// MaxAge is how long rollups are kept. Default 30 days.
	MaxAge time.Duration
}

// EnsureRollupStream creates proto.RollupStream, capturing
// proto.RollupSubjectAll in file storage, or updates it to cfg when it
// exists.
func EnsureRollupStream(ctx context.Context, js jetstream.JetStream, cfg RollupConfig) (jetstream.Stream, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultRollupMaxAge
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        proto.RollupStream,
		Description: "Meridian 1-minute rollups per scope",
		Subjects:    []string{proto.RollupSubjectAll},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  RollupDuplicateWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure rollup stream %s: %w", proto.RollupStream, err)
	}
	return s, nil
}
