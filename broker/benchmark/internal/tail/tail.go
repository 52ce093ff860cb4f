// Package tail keeps the end of a child process's output, for the error
// messages of the benchmark harnesses. A Buffer is safe for concurrent use.
package tail

import "sync"

// Buffer keeps the last Max bytes written to it.
type Buffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// New returns a Buffer keeping the last max bytes.
func New(max int) *Buffer { return &Buffer{max: max} }

func (w *Buffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if over := len(w.b) - w.max; over > 0 {
		w.b = append(w.b[:0], w.b[over:]...)
	}
	return len(p), nil
}

func (w *Buffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}
