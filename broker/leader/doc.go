// Package leader elects one leader among any number of processes with a
// lease kept in a JetStream key-value bucket, so that exactly one of them
// does a job at a time (Meridian's aggregators use it to have a single
// publisher of snapshots) and another takes over when the leader dies.
//
// # The lease
//
// The lease is one key in a bucket whose TTL (the stream's MaxAge) is the
// lease TTL; its value is the holder's ID plus a random nonce, so that two
// electors misconfigured with the same ID still never both hold it. All
// writes are compare-and-set on the key's revision:
//
//   - A follower that finds the key absent (never taken, resigned, or expired
//     by the bucket's TTL) takes it with Create.
//   - The leader renews every Renew with Update against the revision it last
//     wrote.
//   - A follower that sees the same revision for TTL (timed from when it
//     first saw that revision, which is no earlier than when it was written)
//     concludes the holder stopped renewing and takes the key with Update
//     against that revision; the bucket's own expiry does the same for a
//     cluster nobody watches.
//
// # Fencing by time
//
// A leader that cannot renew must stop before anyone else can start. Leading
// reports true only until RenewDeadline after the last renewal the leader
// sent and saw acknowledged. Any other elector waits at least TTL after that
// renewal was stored before it takes the key, and RenewDeadline < TTL, so the
// two leadership intervals are separated by at least TTL − RenewDeadline,
// which must exceed the delivery latency of whatever the leader publishes.
// The check is made by Leading itself against the clock, not by the
// election goroutine, so a leader whose goroutine is late to notice still
// stops on time. Callers must check Leading right before every write the
// lease protects.
//
// Every elector sharing a bucket must use the same TTL; Run refuses a bucket
// whose TTL differs (ErrTTLMismatch). Clocks are only compared within one
// process, so hosts need not agree on the time of day, only on its rate.
//
// # Concurrency
//
// Leading, ID and Resign are safe for concurrent use. Run runs the election
// on the calling goroutine until its context ends (the lease is then left to
// expire, as if the process died) or Resign is called (the lease is deleted
// so another elector takes over at once). OnChange is called on Run's
// goroutine at every change of leadership, including the final step-down
// when Run returns; it must return quickly, since it delays renewals.
package leader
