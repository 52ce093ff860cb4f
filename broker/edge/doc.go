// Package edge serves the Kairos-compatible /ws/metrics WebSocket protocol to
// very many subscribers at a small, fixed cost per connection.
//
// An Edge subscribes to the live snapshots the aggregator publishes on NATS
// for the cluster and every region, and for the instances its clients
// follow (follow.go: only while followed, and FollowGrace after), keeps the
// newest of each scope and an in-memory window of history for the scopes it
// serves, and pushes each WebSocket client its scope's snapshots on the
// client's own cadence. Its NATS fan-in thus follows its clients, not the
// number of instances. History beyond memory comes from JetStream: the 1 s
// history stream (proto.HistoryStream) and the one-minute rollups
// (proto.RollupStream). Plain HTTP requests on the same port are served by
// an internal http.Server (/healthz, /readyz and Config.HTTP).
//
// # Shape
//
// After the zero-copy upgrade there is no goroutine per connection, and no
// net.Conn either: a connection keeps only its socket's descriptor (taken
// over from the net.Conn, which is closed), read and written under its lock.
// One epoll goroutine (poller) reads every connection without blocking and
// parses frames from a per-connection buffer that is nil while idle; a few scheduler
// shards (one per core) each own a timing wheel of 10 ms slots and push
// snapshots, heartbeats and pings when a connection's time comes. A snapshot
// is encoded once per scope and metric set, WebSocket header included, and
// the same immutable bytes are written to every subscriber of that set.
// Whatever may wait on JetStream — history, replays, looking up a scope not
// seen live — runs on a small pool of history workers (HistoryWorkers),
// never on the poller or a shard; the workers then queue the frames on the
// connection. Since idle subscribers allocate nothing, the collector would
// not run after a burst of upgrades and the burst's garbage would stay
// resident: one goroutine returns it to the OS once handshakes go quiet
// (release.go, MemoryReleaseUpgrades).
//
// # Admission
//
// Before the upgrade (admit.go, limits.go): every socket counts against its
// client address and the edge from accept to close (MaxConnsPerAddr,
// MaxConns, MaxHandshakesPerAddr, MaxHandshakes), upgrades are rate limited
// per address, the Origin must be allowed (AllowedOrigins; same-origin
// only by default), and with Config.Auth the JWT (Authorization: Bearer,
// ?token= or a "bearer.<jwt>" Sec-WebSocket-Protocol value, echoed) must
// verify and grant the URL's scope. Refusals are plain HTTP: 401, 403, 429
// with Retry-After, 503, counted in rejections_total by reason. After it, a
// subscription naming a scope outside the token gets an Error and the
// previous subscription stays, and the connection is closed with 4401
// "token expired" when its token expires. Config.HTTP requests get the same
// origin and token checks and a per-address rate limit. With Config.TLS the
// port speaks only TLS (see tls.go for how wss reaches the epoll path).
//
// # Protocol
//
// The protocol — what a client sends and receives, in which order, every
// refusal, Error event and close code — is specified once, in the README's
// "/ws/metrics protocol" section, and asserted by this package's tests and
// the integration tests that run the Kairos guide's clients. Config tunes
// it; each field's documentation names the rule it bounds. What the
// implementation adds to that contract:
//
//   - A snapshot's frames are built lazily, once per form (the metric set a
//     subscription's snapshots carry, proto.Subscription.SnapshotMetrics),
//     and never modified after: the same bytes sit in any number of queues.
//     A delivery looks its form up without locking or allocating.
//   - A subscription's scope, and anything it asks of history, is resolved
//     before it takes effect: a connection's state changes only from a
//     complete subscription, so a failure leaves the previous one intact.
//   - Replays and TimeSeries are queued as history output (bounded by
//     MaxHistoryPendingBytes); live snapshots conflate but never overtake
//     queued history.
//   - Instance scopes are published by the aggregators on demand: one
//     follow goroutine subscribes to the instances this edge's connections
//     follow and tells the aggregators every second, on
//     proto.InterestSubject, which ones (interest.go, follow.go): the same
//     set, so they publish what the edge listens to. Subscription changes
//     happen only there, never on the poller, a shard or a worker.
//   - Which scopes exist is answered by the JetStream streams, not by the
//     live subscriptions (which no longer see every instance): a scope not
//     held is looked up in the history stream, then the rollups (every
//     instance has a one-minute rollup), then probed live; the list in the
//     unknown-scope error merges the scopes held with the streams'
//     subjects, like GET /api/metrics/list, and names at most the 20
//     closest to the one asked for (closest.go).
//   - Snapshots NATS drops because intake fell behind (a slow consumer)
//     are counted (snapshot_messages_dropped_total) and logged at most
//     once a minute by the follow loop.
//   - The stale notice is sent by the shard delivering the snapshot, at
//     most once per stall and connection (StaleAfter, stale.go).
//
// # Concurrency
//
// New, Run, Shutdown, Addr and Ready are safe to call from any goroutine;
// Run may be called once. Per connection, a small mutex serialises writers
// (gobwas/ws does not) and guards the subscription and its queued messages;
// input parsing belongs to the poller goroutine, scheduling state to the
// connection's shard goroutine, and a connection's queued messages to one
// history worker at a time. Scope lookups in JetStream (from workers and
// from handshakes) are at most HistoryWorkers at once. Run joins every
// goroutine it started before it returns.
//
// The edge needs Linux (epoll).
package edge
