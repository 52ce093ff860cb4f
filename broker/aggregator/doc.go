// Package aggregator merges the cumulative per-instance reports that gateways
// publish on proto.ReportSubjectAll into one snapshot per scope (the cluster,
// each region, each instance) and second, and publishes those snapshots with
// JetStream on proto.SnapshotSubject(scope), where the history stream keeps
// them and edges read them live. Once a minute it also publishes a rollup per
// scope into proto.RollupStream. Any number of aggregators may run; one leads.
//
// The package has these parts:
//
//   - Merger (merge.go, window.go, state.go) is the arithmetic: per-instance
//     boot and sequence tracking, restart detection, counters that never
//     decrease, staleness of gauges, and the sliding-window response-time
//     mean, with its complete State as plain data. It is a pure value with no
//     I/O and no locking. latency.go adds the latency percentiles: per-tick
//     merges of the instances' high-resolution histograms over the same
//     window (kept out of State for size; a restore keeps the merger's own).
//     The cluster and each region keep a running sum of their window, so a
//     tick costs them a scan of the touched buckets whatever the number of
//     instances; an instance keeps its window's tick histograms packed and
//     its quantiles are computed only when its snapshot is published
//     (AppendSnapshotsFor). Heap per tracked instance, the same at 10 000
//     and 100 000 (BenchmarkInstanceMemory): 0.7 KB in the merger without
//     histograms; with a histogram of ~500 buckets (100 requests a second)
//     13.3 KB, most of it the baseline each report's delta is taken from
//     (16 B a bucket), plus 10.3 KB in the book for the instance's
//     minute rollup. The replay buffer adds the last report, its
//     histogram packed (~2.5 B a bucket). MaxInstances bounds the total;
//     a forgotten instance frees all of it.
//   - Aggregator (aggregator.go, publish.go) is the node: it feeds a Merger
//     from NATS, ticks on every wall-clock second, and, leading, publishes.
//   - High availability (ha.go, replay.go, statekv.go, book.go): the lease
//     election (package leader), the persisted merge state, the replay that
//     makes failover exact, and the book of what was published.
//   - Defence in depth (plausible.go, adopt.go): reports whose payload
//     contradicts their subject, whose counters grow faster than
//     MaxRequestRate, whose seq jumps, or that exceed the instance and
//     region caps are rejected and counted by reason, changing nothing; the
//     book adopts only the lease holder's snapshots, never while leading
//     and never from the future, and never holds implausible counters.
//   - Rollup (rollup.go) is the pure per-minute rollup computation;
//     rollupstream.go keeps the stream that holds the rollups; rollwriter.go
//     writes the instance rollups, paced.
//   - Sharding (tier.go, clustermerge.go, clustertier.go): Config.Tier
//     TierRegion makes the aggregator one region shard, merging only the
//     reports of Config.Regions and publishing their region and instance
//     scopes; TierCluster merges the published region snapshots into the
//     cluster snapshot with a ClusterMerger, exactly as the single tier
//     (TierAll, the default) would. See "Sharding" below.
//   - The gateway collector (exporter.go, exporter_native.go) relays each
//     instance's raw counters to Prometheus at scrape time, its latency
//     histogram as classic and native buckets.
//
// # Leadership and failover
//
// Every aggregator subscribes to the reports and merges them ("hot"), and
// watches the published snapshots and rollups. One of them holds a lease in
// the JetStream bucket LeaseBucket (TTL 2s by default) and is the only one
// that publishes snapshots and rollups and writes the merge state. A leader
// that cannot renew stops publishing at its renew deadline, before any other
// can take the lease, so two never publish at once; snapshot message ids
// (scope@second) make the history stream store a second once even so.
//
// The leader persists its merge State (per-instance boots, sequence numbers,
// raw counters and reset offsets, windows) in StateBucket every second, or
// as often as writing allows when that takes longer (the write runs beside
// the tick, never delaying a second's snapshots), compare-and-set on the
// revision it last read or wrote, gzipped when large, in chunks behind a
// manifest when larger than one NATS message (statechunks.go), and once
// more when it stops. A new leader, or the first after every
// aggregator restarted, restores that state and replays what it buffered
// since: for every instance the last report of its current boot and of the
// boot before. Reports are cumulative and carry sequence numbers, so
// whatever the state already holds is ignored as a duplicate and whatever the
// old leader applied after its last write is applied now. A graceful stop
// persists, then resigns the lease, so a follower takes over within its
// poll interval (100ms by default); a killed leader is replaced within
// TTL + poll (≤ 2.2s by default), and the new leader publishes the current
// second at once, so snapshot times never step by more than 3s. The book of
// published seconds (and the last published second stored in the state) keeps
// it from publishing a second that was already published.
//
// Without JetStream quorum nobody can hold the lease; the aggregator that
// led then publishes live snapshots on core NATS until the store recovers
// (live-only, see liveonly.go), so subscribers keep a live view. It keeps
// what it published so (the newest RefillWindow of it) and writes it, and
// the rollups of those minutes, into the history once the store recovers
// (refill.go), with the same message ids, so the history has no gap for
// them; refilled snapshots go to proto.RefillSubject, which the history
// stream files under the snapshot subject, so live subscribers never see
// an old second arrive late.
//
// The stream keeper (streamLoop) ensures the history and rollup streams
// every second while JetStream is unavailable for now, as while a fresh
// cluster elects its meta leader and then each stream's leader, logging
// each condition once; Ready names what is missing meanwhile.
//
// # Exactness contract
//
// Cluster and region requests_total, requests_success and requests_error
// never decrease: not across gateway restarts, leader failover, or a restart
// of every aggregator. Beyond that:
//
//   - A gateway that restarts gracefully sends a final report with all it
//     counted: the totals then equal exactly the requests the gateways
//     served, across any number of restarts and failovers, as long as the
//     final report reaches the aggregators.
//   - A gateway that crashes loses what it counted after its last delivered
//     report: at most one publish interval of that instance.
//   - Lost, duplicated or reordered report messages cause no error and no
//     miscount: the next report carries the cumulative counters, and sequence
//     numbers expose duplicates. Only the loss of a boot's last reports loses
//     counts, as a crash does.
//   - Failover is exact when the new leader received the reports the old one
//     applied after its last state write (both subscribe to the same
//     subject). The replay keeps two boots per instance, so an instance that
//     restarts twice between two state writes (within a second) and then
//     loses its leader loses the first boot's tail. Should a new leader still
//     trail what was published (a report NATS dropped for it alone), its
//     snapshots are held at the published counters until they catch up
//     (snapshots_held_back_total counts it).
//   - Leadership is timed on each aggregator's own clock; hosts need not agree
//     on the time of day, but a new leader whose clock is behind the old one's
//     skips the seconds the old one already published.
//
// # Sharding
//
// Each tier elects its own leader and persists its own state: the single
// tier under LeaseKey and StateKey, a region shard under keys derived from
// its sorted region set, the cluster tier under "aggregator.cluster" and
// "merge.cluster" (see Config.leaseKey). Every tier follows only the
// snapshots and rollups of the scopes it publishes, so that its book,
// adoption and live-only yielding see no other tier's publisher.
//
// The cluster tier's exactness rests on the single tier's merge adding
// every report's delta to the cluster and to one region alike: its
// cumulative counters are the sum of the regions', its window samples the
// summed (duration sum, count), its tick histogram the sum of the regions'
// tick histograms (see ClusterMerger). It publishes second T once every
// region seen within StaleAfter has published T, or at T +
// Config.ClusterDeadline; a region missing then counts with its latest
// snapshot, so cluster totals never decrease across a shard failover, and
// the book keeps them from decreasing across a cluster-tier failover.
//
// # Rollups
//
// Every aggregator builds each scope's 1-minute rollup (see Rollup) from the
// snapshots it sees published, whoever published them, so a rollup spans a
// failover. The leader publishes a minute's cluster and region rollups at
// the first tick of the next minute on proto.RollupSubject(scope) with
// message id scope@minute. The instance rollups, one per instance, go to a
// writer of their own (rollwriter.go) that spreads them over
// Config.RollupSpread through its own JetStream context, at most
// Config.RollupMaxPending unacknowledged, retrying failures, so a minute's
// burst never delays a second's snapshots. A follower keeps each rollup it
// computed until it sees it published, so a new leader publishes exactly
// the ones the old one had not (message ids store any both sent once).
// Rollups waiting longer than 3 minutes are dropped and counted.
//
// # Concurrency
//
// A Merger (and a ClusterMerger) is not safe for concurrent use; its owner
// serialises calls. The
// Aggregator owns one Merger and guards it, and the replay buffer, with a
// mutex held only while a report is applied or snapshots and state are copied
// out, never while encoding or publishing, so publishing never stalls report
// intake. All Aggregator methods are safe for concurrent use. Run starts
// goroutines (the stream keeper, the election, the state writer, the
// rollup writer and the refill) that it joins before it returns; the tick and the take-over run on
// Run's own goroutine. The refill buffer has its own lock.
package aggregator
