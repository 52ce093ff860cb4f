// Package history keeps Meridian's snapshot history: the JetStream stream
// that captures every published snapshot (the durable record, surviving
// aggregator and edge restarts), loading a time range of it back, an
// in-memory Ring that edges serve history requests from, and Series, which
// downsamples snapshots into Kairos TimeSeries points with per-metric rules.
//
// EnsureStream and Load are safe for concurrent use. A Ring is safe for
// concurrent use. Series is a pure function.
package history
