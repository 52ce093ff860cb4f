package wait_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/integration/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeT records what For reports, so that a failing wait can be tested.
type fakeT struct{ failed string }

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	var ft fakeT
	wait.For(&ft, 10*time.Second, "three", func() bool { return n.Load() == 3 })
	if ft.failed != "" {
		t.Fatalf("For failed: %s", ft.failed)
	}
}

func TestForFailsNamingWhatAtTheDeadline(t *testing.T) {
	var ft fakeT
	wait.For(&ft, 20*time.Millisecond, "the impossible", func() bool { return false })
	if ft.failed != "timed out after 20ms waiting for the impossible" {
		t.Fatalf("For reported %q", ft.failed)
	}
}

func TestUntil(t *testing.T) {
	if err := wait.Until(context.Background(), 10*time.Millisecond, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Until past its deadline = %v, want DeadlineExceeded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := wait.Until(ctx, time.Hour, func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Until with an ended context = %v, want Canceled", err)
	}
	if err := wait.Until(ctx, 0, func() bool { return true }); err != nil {
		t.Fatalf("Until with a condition that holds = %v", err)
	}
}
