// Package aggregator merges the cumulative per-instance reports that gateways
// publish on proto.ReportSubjectAll into one snapshot per scope (the cluster,
// each region, each instance) and second, and publishes those snapshots with
// JetStream on proto.SnapshotSubject(scope), where the history stream keeps
// them and edges read them live.
//
// The package has three parts:
//
//   - Merger (merge.go) is the arithmetic: per-instance boot and sequence
//     tracking, restart detection, counters that never decrease, staleness of
//     gauges, and the sliding-window response-time mean. It is a pure value
//     with no I/O and no locking.
//   - Aggregator (aggregator.go) is the node: it feeds a Merger from NATS,
//     ticks on every wall-clock second, and publishes the snapshots.
//   - The gateway collector (exporter.go) relays each instance's raw counters
//     to Prometheus at scrape time.
//
// Concurrency: a Merger is not safe for concurrent use; its owner serialises
// calls. The Aggregator owns one Merger and guards it with a mutex that is
// held only while a report is applied or snapshots are copied out, never
// while encoding or publishing, so publishing never stalls report intake. All
// Aggregator methods are safe for concurrent use. Run starts goroutines that
// it joins before it returns.
package aggregator
