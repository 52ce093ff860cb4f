// Package gateway is Meridian's metering reverse proxy: it forwards HTTP
// traffic to one upstream, counts every request once, and publishes the
// instance's cumulative counters to NATS (see package collector) for the
// aggregators.
//
// The pieces compose:
//
//   - Recorder holds the per-instance counters as a fixed set of atomics.
//     Recording a request is lock-free and allocation-free; reading the
//     counters (Counters) is safe at any time from any goroutine.
//   - Middleware wraps any http.Handler and records each request into a
//     Recorder: its final status, its duration and the in-flight gauge.
//   - Node is a complete gateway instance: an http.Server whose handler is
//     Middleware around an httputil.ReverseProxy, a collector.Publisher fed by
//     the Recorder, and a Prometheus collector that reads the same Recorder at
//     scrape time.
//
// Metrics (on Config.Registerer, prefixed by Config.Namespace):
// <ns>_proxy_requests_total{code="1xx".."5xx"},
// <ns>_proxy_request_duration_seconds (histogram on proto.LatencyBounds),
// <ns>_proxy_active_requests, <ns>_gateway_reports_published_total and
// <ns>_gateway_report_publish_errors_total. They are read from the Recorder
// at scrape time, so they always agree with the reports.
//
// Concurrency contract: Recorder, the Middleware handler and every Node method
// are safe for concurrent use. New binds the listener (Addr works at once).
// A Node is run once: Run serves until its context ends or Shutdown is
// called; Shutdown is idempotent and may be called from any goroutine,
// before, during or after Run (the lifecycle of package broker/service).
//
// Status accounting: a request counts as a success when its final status is
// below 400 and as an error otherwise. Informational 1xx headers are not final
// statuses; a hijacked connection (a protocol switch such as WebSocket) counts
// as 101. A request whose context ended before any response was written
// (normally: the client went away) counts as 499, and a handler that panics
// counts as 500, or 499 if the client had gone away.
package gateway
