// Package benchmark measures the edge (broker/edge) with real subscribers
// in separate processes, next to a naive baseline (naiveedge) and a raw
// write loop, and reports memory per idle subscriber, CPU per delivered
// snapshot, tick-to-wire latency and delivered-versus-due counts. It is the
// engine of `meridian bench`.
//
// # Shape
//
// Run is the harness. For each mode it starts two child processes of the
// same binary (Config.Child builds their command line; the child side is
// RunChild), so that server and clients have separate CPU and memory
// accounting:
//
//   - the server child runs an embedded NATS server, an aggregator stub
//     publishing a real proto.Snapshot on proto.SnapshotSubject(cluster)
//     every whole second, and one of: the real edge.Edge (mode edge), the
//     naive baseline (mode naive: a goroutine pair, a time.Ticker and a
//     json.Marshal per delivery), or the raw loop (mode raw: one goroutine
//     writing the same pre-encoded frame bytes to the same kind of sockets
//     on the same 10 ms slot schedule — the machine's ceiling);
//   - the client child opens WebSocket subscribers from source addresses
//     127.0.0.1…127.0.0.S (so ephemeral ports never run out), paced at
//     Config.ConnectRate, as many as the harness asks at each step (the
//     warm-up's, then up to each point of the sweep), sends each a
//     subscription, and reads them all through a few epoll loops (one per
//     core), time-stamping every frame.
//
// The harness talks to its children over stdin/stdout, one JSON object per
// line; a child exits when its stdin closes, so it cannot outlive the
// harness. Children get their own process group, which is killed on every
// exit path.
//
// # What is measured
//
//   - Memory per idle subscriber: the server's VmRSS and Go heap after
//     runtime.GC and debug.FreeOSMemory, with N connected and idle, minus
//     the same after a warm-up (Config.Warmup subscribers connected, got
//     their ticks and left), divided by N: the marginal cost of one more
//     idle subscriber. Beside it: the same over the RSS before any
//     connection (the one-off cost of the first connections spread over
//     N, which shrinks as N grows), the one-off cost itself, the slope
//     between the points of a sweep (Config.MemoryPoints: counts measured
//     on the way up in the same server), the RSS held before the forced
//     collection, and where the growth is (anonymous and file RSS, heap
//     objects, fragmentation, stacks, metadata and threads, from
//     runtime/metrics and /proc). memory.go says why. Kernel socket memory
//     is not included (it is not user space).
//   - CPU per delivery: the server process's CPU time (getrusage, user +
//     system, all threads, the kernel's loopback work on its writes
//     included) over the steady window, divided by the Snapshot frames it
//     wrote in that window. The NATS server and the stub run in every mode,
//     so their small fixed cost is in every figure alike.
//   - Tick-to-wire: a subscriber's ticks are t0 + k·interval, t0 being the
//     moment of its first Snapshot (the edge's contract). The client takes
//     t0 as the receipt time of that first Snapshot and measures receipt
//     minus scheduled tick for each later one. t0 lies between the moment
//     the upgrade request was sent and that receipt, so the true value
//     exceeds the measured one by at most that handshake time (reported as
//     the t0 error, typically a fraction of a millisecond); the edge's
//     10 ms slots may also deliver up to 5 ms before the exact tick, which
//     shows as small negative values. Snapshot age
//     (receipt minus the snapshot's own timestamp) is reported as well; at
//     1 s intervals it is dominated by the connection's phase. Servers keep
//     a subscriber's phase from the tick its first Snapshot was scheduled
//     for, so when that first one was written late the client moves t0 to
//     the earliest phase it sees before the window; otherwise every later
//     tick would look early and count as an interval late.
//   - Delivered versus due: every tick of every subscriber inside the
//     window is due; a tick is made when a Snapshot arrived for it (within
//     a 1 s grace after the window). Extra Snapshots for a tick already
//     served are counted as duplicates. The report names the latest
//     delivery and the first subscriber short of its ticks, if any.
//   - Slow subscribers (Config.Slow, none by default): a share of the
//     subscribers stall and then read everything (staller), so the server's
//     slow-client policy shows: the edge's conflations, the baseline's
//     dropped ticks, the raw loop's abandoned connections. Their Snapshots
//     are counted apart from everyone else's ticks.
//
// Everything runs over loopback on one machine, so a server's write also
// pays for the receiving side of TCP (the kernel runs it in the writer's
// context), for netfilter where the host has rules, and for waking the
// client's reader on the other core; the raw loop pays the same, which is
// why it is the ceiling to compare with. Config.Network (by default a
// fresh network namespace per mode, where the process may create one)
// takes the host's firewall and connection tracking out; Config.ClientPoll
// the wake-ups. The report also shows the CPU the hypervisor stole from
// this machine in the window, which appears as latency nothing here can
// remove.
//
// Heartbeats, pings and the idle timeout are switched off in the edge so
// that all three servers do the same work: one Snapshot frame per
// subscriber and interval.
//
// # Concurrency
//
// Run and RunChild block until done and may be called from any goroutine;
// every goroutine and child process they start is stopped and joined before
// they return. The package needs Linux (epoll, /proc).
package benchmark
