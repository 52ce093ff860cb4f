// Package scale measures Meridian's cost as the number of gateway instances
// grows: the engine of `meridian bench scale`.
//
// Run starts the real roles as separate processes of the Meridian binary
// (Config.Command), each on its own loopback ports, so that each has its own
// CPU and memory accounting:
//
//   - NATS: one server with JetStream, or (Config.NATSNodes 3) three routed
//     into a cluster, the aggregators then keeping the streams and buckets
//     at three replicas; the aggregators, the edge and the simulator's
//     publishers are spread over the nodes.
//   - Aggregator groups of Config.Aggregators processes each (one leads):
//     the single tier, or (Config.Shards K) K region shards (`--tier region
//     --regions …`, the regions dealt round robin) and a cluster tier
//     (`--tier cluster`), per the Sharding contract.
//   - An edge, and (Config.Subscribers) that many WebSocket clients of it,
//     following the cluster, the regions and Config.FollowedInstances
//     instances at 1 s. They connect at Config.Phase after a second, which
//     the edge keeps as their phase, so each delivery should carry the
//     second just past: one that carries an older second shows a snapshot
//     that was not at the edge in time.
//
// The harness process then plays N gateway instances (Simulator): each
// publishes a valid proto.Report with growing cumulative counters on its own
// subject once a second, the instances spread evenly over the second. Each
// report carries a cumulative schema-6 latency histogram of
// Config.HistogramBuckets occupied buckets (one of a few log-normal-ish
// shapes around 1.5 to 5 ms), built from the report's sequence number at
// publish time, so no histogram is kept per instance. A core NATS subscriber
// (the observer) times every cluster and region snapshot against its second
// and checks that per scope no second repeats and no total goes backwards,
// and that the latency quantiles of the window's cluster snapshots are those
// of the simulator's exact merged histogram (within a rank slack of 1 %, as
// the aggregator's window may hold a second more of some instances) and
// their tick histograms hold no slot an instance did not send; the WebSocket
// subscribers check counters and seconds of what they receive.
//
// After a warm-up, a window of whole seconds is measured from /proc (CPU and
// RSS of every child), each NATS server's /varz, the history stream's size,
// the aggregators' /metrics (reports received, snapshots published, tracked
// instances, Go heap) and the merge states stored in the state bucket (size
// and chunks). With two aggregators per group a leader is then killed
// (SIGKILL) and the time to its scope's next snapshot measured — in sharded
// mode a region shard's leader, then the cluster tier's. Last the load stops
// and the cluster and every region total must come to exactly what the
// simulated gateways published. Report.Check is the harness checking its
// own figures for contradictions (CI runs it at small N); the figures
// themselves are benchmarks, never asserted.
//
// # Concurrency
//
// Run blocks until done and may be called from any goroutine; it stops
// every child process (its own process group, SIGTERM then SIGKILL) and
// joins every goroutine it started (simulator workers, subscriber readers)
// before it returns. Children never inherit MERIDIAN_* variables, which
// would set their flags. Linux only (/proc).
package scale
