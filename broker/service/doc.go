// Package service holds the conventions every Meridian role (gateway,
// collector, aggregator, leader elector, edge) shares, written once:
//
//   - Configuration: each package's Config documents its zero values as
//     exported Default* constants; Validate rejects what no default can
//     repair (NonNegative, First), and withDefaults fills the zero fields.
//     CLI flags read the same constants.
//   - Lifecycle: New validates and binds every listener (so a taken port
//     fails before anything serves), Run(ctx) serves until ctx ends or
//     Shutdown, Shutdown(ctx) is idempotent. Run reports ErrRunning when
//     called twice and ErrClosed after Shutdown.
//
// Everything here is safe for concurrent use.
package service
