package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/service"
)

// run is the smallest service: it serves until its context ends.
type run struct {
	life    service.Lifecycle
	running chan struct{} // closed once a Run has started, if set
}

func (r *run) Run(ctx context.Context) error {
	ctx, err := r.life.Start(ctx)
	if err != nil {
		return err
	}
	defer r.life.Exit()
	if r.running != nil {
		close(r.running)
	}
	<-ctx.Done()
	return nil
}

func (r *run) Shutdown(ctx context.Context) error {
	if !r.life.Stop() {
		return nil
	}
	return r.life.Wait(ctx)
}

func TestLifecycleShutdownStopsRun(t *testing.T) {
	s := run{running: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case <-s.running:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not start")
	}
	// A second Run while the first runs is refused with ErrRunning.
	if err := s.Run(context.Background()); !errors.Is(err, service.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	for range 2 { // idempotent
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-s.life.Stopping():
	default:
		t.Fatal("Stopping not closed after Shutdown")
	}
	if err := s.Run(context.Background()); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("Run after Shutdown = %v, want ErrClosed", err)
	}
}

func TestLifecycleRunEndsWithItsContext(t *testing.T) {
	var s run
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-s.life.Stopping():
		t.Fatal("Stopping closed though nobody called Shutdown")
	default:
	}
	if err := s.Run(context.Background()); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("Run after Run returned = %v, want ErrClosed", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown after Run returned: %v", err)
	}
}

func TestLifecycleShutdownBeforeRun(t *testing.T) {
	var s run
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("Run after Shutdown = %v, want ErrClosed", err)
	}
}

// Shutdown's wait is bounded by its context when Run does not return.
func TestLifecycleWaitHonoursContext(t *testing.T) {
	var l service.Lifecycle
	if _, err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !l.Stop() {
		t.Fatal("Stop after Start reported no Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	l.Exit()
	if err := l.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after Exit = %v", err)
	}
}
