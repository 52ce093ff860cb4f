// Package logbuf is the one way Meridian's tests capture a component's log
// output: a Buffer is an io.Writer for a slog handler (or a NATS server's
// logger) that the test reads while the component still writes.
//
// Like package wait it is an ordinary package beside the end-to-end tests so
// that every package's tests share it. A Buffer is safe for concurrent use.
package logbuf

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
)

// Buffer collects everything written to it. The zero value is ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Count is how many times substr occurs in what was written.
func (s *Buffer) Count(substr string) int {
	return strings.Count(s.String(), substr)
}

// Records decodes the JSON lines (as slog.JSONHandler writes them) that
// contain substr; lines that are not JSON objects are skipped.
func (s *Buffer) Records(substr string) []map[string]any {
	var out []map[string]any
	for l := range strings.SplitSeq(s.String(), "\n") {
		if !strings.Contains(l, substr) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}
