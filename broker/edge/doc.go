// Package edge serves the Kairos-compatible /ws/metrics WebSocket protocol to
// very many subscribers at a small, fixed cost per connection.
//
// An Edge subscribes to the live snapshots the aggregator publishes on NATS
// for every scope (the cluster, each region, each instance), keeps the
// newest of each scope and an in-memory window of history for the scopes it
// serves, and pushes each WebSocket client its scope's snapshots on the
// client's own cadence. History beyond memory comes from JetStream: the 1 s
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
// connection.
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
//   - Right after the upgrade the client receives exactly one Snapshot (all
//     metrics) of its scope — or, when the edge has no snapshot of that
//     scope yet, exactly one as soon as the first arrives. That moment is
//     the connection's phase t0: its snapshots then fall at
//     t0 + k·interval, each carrying the newest snapshot of the scope held
//     at that tick (the same one again if none newer arrived: the contract
//     is a snapshot per interval, and its timestamp tells its age).
//   - A text message is a subscription; a valid one replaces the current one
//     wholesale (a subscription without region or instance means the
//     cluster). It never triggers an immediate Snapshot: the next one is due
//     at (last snapshot sent + new interval), or at once if that moment has
//     already passed. A subscription that asks for history (include_history
//     or since) or names a scope not held in memory takes effect when a
//     history worker has prepared it; until then the previous subscription
//     stays in force. Messages take effect in the order they arrived: while
//     one waits for a worker, the later ones, and the Error replies to
//     invalid and binary messages, wait behind it — at most 8; a further
//     message gets an Error at once and is dropped.
//   - Scopes: "region": "eu" or "instance": "gw-eu-1" (not both) subscribe
//     to that scope's snapshots and history. A scope is known when a live
//     snapshot of it arrived, or when its newest snapshot is found in the
//     history stream, else in the rollup stream; a scope known only from
//     history starts with that snapshot, repeated on the cadence until a
//     live one arrives. A subscription naming an unknown scope gets the
//     Error "unknown scope region.mars: no snapshot of it was seen live or
//     is kept in history; known scopes: cluster, region.eu, …,
//     instance.gw-eu-1, …" (the scopes held live and those in either stream,
//     cluster first, then regions, then instances, by name; at most 50
//     listed, then "and N more"), and the previous subscription stays. When
//     the streams cannot be searched for a scope not held in memory, the
//     Error says so ("scope <scope> was not seen live and its history could
//     not be searched (<reason>); try again later") and the previous
//     subscription stays likewise. Scopes that publish nothing for 10
//     minutes and that no connection is subscribed to are forgotten (and
//     found again in history when named).
//   - The upgrade URL may set the connection's first subscription:
//     /ws/metrics?region=eu, ?instance=gw-eu-1, and ?since=<RFC 3339> (see
//     since below); other parameters are ignored. The first Snapshot is then
//     of that scope. A malformed parameter — an invalid name, both region
//     and instance, an empty or repeated parameter, a since that is not RFC
//     3339, bad URL escaping — refuses the upgrade with 400 and a text/plain
//     body "bad query parameter: <reason>"; a well-formed scope that is not
//     known with 404 and the unknown-scope text above; a scope not seen live
//     whose history could not be searched with 503.
//   - include_history: true sends one TimeSeries event per subscribed
//     metric, in wire order, right before the subscription takes effect:
//     the history_seconds (default 3600, at most 30 days) ending at the
//     scope's newest snapshot (at the current time when there is none),
//     downsampled by history.Series into at most history_points points
//     (default 720, capped at Config.HistoryPoints): buckets of
//     history.StepFor(history_seconds, points) whole seconds aligned to the
//     Unix epoch, each point stamped with its bucket's start, empty buckets
//     omitted; counters take the bucket's last value, active_connections its
//     mean, avg_response_time Σduration/Σcount of the bucket, success_rate
//     the bucket's last totals. A span within HistoryWindow (default 1 h) is
//     served from the scope's in-memory ring alone. A longer span — or any
//     span the ring holds nothing of — also reads the scope's one-minute
//     rollups for the part before the ring, so that part has at most one
//     point per minute. So a series is never empty when the scope has data
//     in the range, and a known scope always has its newest snapshot in it.
//     Rings: the cluster's exists from startup, backfilled from the history
//     stream (retried with backoff; until it succeeds it holds what arrived
//     live); another scope's is created by its first history request (or
//     replay) and backfilled then; all are fed by the live snapshots; at
//     most MaxHistoryScopes besides the cluster's, the least recently
//     requested dropped first. A ring whose backfill failed serves what it
//     holds; a rollup read that fails fails the request (below).
//   - since (RFC 3339, in a subscription or on the upgrade URL) replays the
//     scope's snapshots with a timestamp strictly after since, as Snapshot
//     events with the subscribed metrics and each its own timestamp, oldest
//     first, after the TimeSeries (if any) and before any live snapshot:
//     from the moment the edge reads the subscription until the replay is
//     queued, the connection's ticks pass without a live Snapshot, and
//     after it no live snapshot older than the last replayed one is sent.
//     Snapshots that arrive while the replay is prepared are appended to
//     it. A replay that sent snapshots counts as the snapshot of its tick:
//     the next live one follows one interval later. With since on the URL
//     the replay takes the place of the first Snapshot, so nothing at all
//     precedes it (a subscription message can only follow the first
//     Snapshot). Replays come
//     from the ring when it reaches back to since, else from the 1 s history
//     stream (24 h by default) for the part before the ring; they never use
//     rollups. At most MaxReplaySnapshots (default 3600) are replayed: the
//     newest ones, so that the replay runs into the live snapshots without a
//     gap. When snapshots after since were left out, an Error event precedes
//     the replay: "replay truncated: at most 3600 snapshots are replayed;
//     the snapshots of <scope> after <since> and before <first replayed>
//     are not replayed, the replay starts at <first replayed>". A since at
//     or after the newest snapshot replays nothing.
//   - History requests — subscriptions with include_history or since (one
//     request each, whichever they ask for), and since on the URL — are
//     rate limited per connection by a token bucket, full at connect:
//     HistoryRequestBurst (default 2) at once, then one per
//     HistoryRequestInterval (default 12 s, i.e. 5 per minute). Over the
//     limit the client gets the Error "history request rate limited: a
//     connection may make 5 history requests (include_history or since) per
//     minute, 2 at once; retry after <RFC 3339 time> (in <n>s); the
//     subscription was applied without its history", and the subscription
//     applies without include_history and since. A request whose JetStream
//     reads fail (or exceed HistoryTimeout, default 10 s) gets the Error
//     "history unavailable: <reason>; the subscription was applied without
//     its history", and the subscription applies likewise.
//   - Invalid subscriptions and binary messages get an Error event; the
//     connection and the previous subscription stay. Messages larger than
//     MaxMessageBytes close with 1009, protocol violations with 1002, invalid
//     UTF-8 with 1007.
//   - Liveness: a Heartbeat event every HeartbeatInterval and a WebSocket
//     ping every PingInterval, each connection's first one at a random point
//     of the interval. A connection from which no frame at all arrived for
//     IdleTimeout is sent close 1001 "idle timeout" and closed without
//     waiting for the reply (the peer is presumed gone).
//   - Output that cannot be written at once is queued; an unsent live
//     Snapshot is replaced by a newer one (conflated), never across queued
//     history. More than MaxPendingBytes of other queued output, or more than
//     MaxHistoryPendingBytes of queued history (TimeSeries and replays),
//     closes the connection (1008 "slow consumer"), and so does WriteTimeout
//     without write progress.
//   - Shutdown sends close 1001 "server shutting down" to every client and
//     waits (bounded by its context) for the clients to close.
//   - Instance scopes are published by the aggregators on demand: one
//     announce goroutine tells them every second, on proto.InterestSubject,
//     which instances this edge's connections follow (interest.go).
//   - A subscriber whose scope's snapshots stop gets one Error saying since
//     when the data is stale (StaleAfter, stale.go).
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
