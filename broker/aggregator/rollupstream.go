package aggregator

import "time"

// RollupConfig configures the rollup stream (history.EnsureRollupStream).
// The leader publishes one rollup per scope and minute on
// proto.RollupSubject(scope), with Nats-Msg-Id "<scope>@<minute unix>".
// Zero fields take defaults.
type RollupConfig struct {
	// Replicas is the stream's replication factor: 1 (default) on a single
	// node, 3 in a cluster.
	Replicas int
	// MaxAge is how long rollups are kept. Default
	// history.DefaultRollupMaxAge (30 days).
	MaxAge time.Duration
}
