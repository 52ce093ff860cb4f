// Package dashboard serves Meridian's live web dashboard: one HTML page, its
// stylesheet and two scripts, embedded in the binary, with no build step and
// nothing fetched from anywhere but the edge that serves it.
//
// The page is a client of the public interfaces only — /ws/metrics for live
// snapshots and history, /api/metrics/list, /api/metrics/latest — so it needs
// the edge's history API mounted on the same origin. Its charts are drawn by
// a small canvas renderer of its own (static/chart.js).
//
// Concurrency: the Handler holds only immutable data and is safe for
// concurrent use.
package dashboard
