// Package scale measures Meridian's cost as the number of gateway instances
// grows: the engine of `meridian bench scale`.
//
// Run starts the real roles as separate processes of the Meridian binary
// (Config.Command): one NATS server with JetStream, one or two aggregators
// and an edge, each on its own loopback ports, so that each has its own CPU
// and memory accounting. The harness process then plays N gateway instances
// (Simulator): each publishes a valid proto.Report with growing cumulative
// counters on its own subject once a second, the instances spread evenly
// over the second. A core NATS subscriber (the observer) times every cluster
// and region snapshot against its second and checks that per scope no
// second repeats and no total goes backwards.
//
// After a warm-up, a window of whole seconds is measured from /proc (CPU and
// RSS of every child), the NATS server's /varz, the history stream's size
// and the aggregators' /metrics; with two aggregators the leader is then
// killed (SIGKILL) and the time to the next cluster snapshot measured; last
// the load stops and the cluster totals must come to exactly what the
// simulated gateways published. Report.Check is the harness checking its own
// figures for contradictions (CI runs it at small N); the figures themselves
// are benchmarks, never asserted.
//
// # Concurrency
//
// Run blocks until done and may be called from any goroutine; it stops
// every child process (its own process group, SIGTERM then SIGKILL) and
// joins every goroutine it started before it returns. Children never inherit
// MERIDIAN_* variables, which would set their flags. Linux only (/proc).
package scale
