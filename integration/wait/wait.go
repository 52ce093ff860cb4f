// Package wait is the one way Meridian's tests (and the bench harness) wait
// for an effect on another goroutine or process: poll a condition until it
// holds or a deadline passes. It never sleeps a fixed time in place of a
// condition.
//
// It lives beside the end-to-end tests because waiting is test support, and
// it is an ordinary package (not a _test file) so that every package's tests
// share it. It imports nothing from testing: For takes the two methods of
// testing.TB it needs, so the bench harness can use Until without linking
// the testing package into the binary.
//
// Everything here is safe for concurrent use.
package wait

import (
	"context"
	"fmt"
	"time"
)

// Interval is how often a condition is polled: short against the
// deadlines tests use, long enough not to starve a loaded 2-core machine.
const Interval = 5 * time.Millisecond

// TB is the part of testing.TB that For uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// For polls cond until it holds or within passes; then it fails t with
// "timed out after <within> waiting for <what>". Give generous deadlines:
// the machines running the suite are shared and loaded.
func For(t TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Until(context.Background(), within, cond); err != nil {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// Until polls cond until it holds (nil), within passes (an error wrapping
// context.DeadlineExceeded) or ctx ends (ctx's error).
func Until(ctx context.Context, within time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if cond() {
				return nil
			}
			return fmt.Errorf("not done after %s: %w", within, context.DeadlineExceeded)
		case <-tick.C:
			if cond() {
				return nil
			}
		}
	}
}
