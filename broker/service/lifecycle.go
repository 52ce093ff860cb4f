package service

import (
	"context"
	"errors"
	"sync"
)

// Errors of the lifecycle, shared by every role so that callers test them
// once: errors.Is(err, service.ErrRunning) holds for the edge's, the
// aggregator's and the gateway's alike.
var (
	// ErrRunning is returned by Run while the service is already running.
	ErrRunning = errors.New("already running")
	// ErrClosed is returned by Run after Shutdown, or once an earlier Run
	// has returned: a service runs once.
	ErrClosed = errors.New("shut down")
)

type state uint8

const (
	stateNew state = iota
	stateRunning
	stateClosed
)

// Lifecycle is the run state of a service with Run(ctx) and an idempotent
// Shutdown(ctx): new, running, closed. The zero value is a new service.
//
// Run calls Start first and defers Exit; Shutdown calls Stop and, when Stop
// says Run started, Wait. Run watches the context Start returns, which ends
// with Run's own context or at Stop, whichever comes first.
type Lifecycle struct {
	mu      sync.Mutex
	state   state
	started bool
	stopped bool
	cancel  context.CancelFunc // ends Start's context
	stop    chan struct{}      // closed by the first Stop
	done    chan struct{}      // closed by Exit
}

// init makes the channels; the caller holds mu.
func (l *Lifecycle) init() {
	if l.stop == nil {
		l.stop, l.done = make(chan struct{}), make(chan struct{})
	}
}

// Start moves a new service to running. It returns a context derived from
// ctx that Stop also cancels, or ErrRunning while running, or ErrClosed
// after Stop or Exit.
func (l *Lifecycle) Start(ctx context.Context) (context.Context, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	switch l.state {
	case stateRunning:
		return nil, ErrRunning
	case stateClosed:
		return nil, ErrClosed
	}
	l.state, l.started = stateRunning, true
	ctx, l.cancel = context.WithCancel(ctx)
	return ctx, nil
}

// Stop closes the service: Start's context ends, Stopping is closed and a
// later Start returns ErrClosed. It reports whether Start had been called,
// that is whether there is a Run to Wait for. It is idempotent.
func (l *Lifecycle) Stop() (started bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	l.state = stateClosed
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
	if l.cancel != nil {
		l.cancel()
	}
	return l.started
}

// Stopping is closed by the first Stop (not by the end of Run's context).
func (l *Lifecycle) Stopping() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	return l.stop
}

// Exit records that Run has returned; Run defers it after a successful
// Start. The service is closed from then on.
func (l *Lifecycle) Exit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state = stateClosed
	l.cancel()
	close(l.done)
}

// Wait waits for Exit, or for ctx to end (returning ctx's error). Call it
// only when Stop reported that Run started.
func (l *Lifecycle) Wait(ctx context.Context) error {
	l.mu.Lock()
	l.init()
	done := l.done
	l.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
