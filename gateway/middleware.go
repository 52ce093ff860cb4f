package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// StatusClientClosedRequest is recorded for a request whose context ended
// before any response was written: the client went away (nginx's 499).
const StatusClientClosedRequest = 499

// Middleware returns a handler that serves next and records every request in
// rec: Begin when it arrives, End with its final status and duration when
// next returns.
//
// The final status is the first non-informational status next writes, 200 if
// it writes a body or returns without writing anything, 101 if it hijacks the
// connection without writing a status, and StatusClientClosedRequest if the
// request's context has ended (the client went away) and nothing was written.
// If next panics the request is recorded as 500 (499 when the client has gone
// away) and the panic continues unchanged: Middleware does not recover it, so
// net/http's own handling, http.ErrAbortHandler included, and the original
// stack trace are preserved. The in-flight gauge is lowered on every path.
//
// The http.ResponseWriter passed to next keeps http.Flusher, http.Hijacker,
// io.ReaderFrom and io.StringWriter working, and implements Unwrap for
// http.ResponseController. Wrappers are pooled, so the middleware itself
// allocates nothing per request. As net/http requires, next must not use the
// ResponseWriter after it returns.
func Middleware(rec *Recorder, next http.Handler) http.Handler {
	if rec == nil || next == nil {
		panic("gateway.Middleware: nil Recorder or handler")
	}
	return &middleware{rec: rec, next: next}
}

type middleware struct {
	rec   *Recorder
	next  http.Handler
	onEnd func(status int, d time.Duration) // optional; see Config.OnRequest
}

var writerPool = sync.Pool{New: func() any { return new(responseWriter) }}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rw := writerPool.Get().(*responseWriter)
	rw.ResponseWriter = w
	start := time.Now()
	m.rec.Begin()
	returned := false
	// Not recover(): a deferred check of "returned" sees panics and
	// runtime.Goexit alike without disturbing either.
	defer func() {
		status := rw.finalStatus(r, returned)
		d := time.Since(start)
		m.rec.End(status, d)
		if m.onEnd != nil {
			m.onEnd(status, d)
		}
		*rw = responseWriter{}
		writerPool.Put(rw)
	}()
	m.next.ServeHTTP(rw, r)
	returned = true
}

// responseWriter captures the final status of a response.
type responseWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool // a final (non-1xx) status or body has been written
	hijacked    bool
}

func (rw *responseWriter) finalStatus(r *http.Request, returned bool) int {
	gone := r.Context().Err() != nil
	switch {
	case !returned && gone:
		return StatusClientClosedRequest
	case !returned:
		return http.StatusInternalServerError
	case rw.wroteHeader:
		return rw.status
	case rw.hijacked:
		return http.StatusSwitchingProtocols
	case gone:
		return StatusClientClosedRequest
	default:
		// net/http answers 200 for a handler that wrote nothing.
		return http.StatusOK
	}
}

// noteWrite records the implicit 200 of a body written before any status.
func (rw *responseWriter) noteWrite() {
	if !rw.wroteHeader {
		rw.wroteHeader = true
		rw.status = http.StatusOK
	}
}

// WriteHeader records the first final status. Informational statuses (1xx
// other than 101, which net/http also treats as final) may be sent any number
// of times before it and are passed on without being recorded.
func (rw *responseWriter) WriteHeader(code int) {
	if !rw.wroteHeader && !rw.hijacked && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		rw.wroteHeader = true
		rw.status = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	rw.noteWrite()
	return rw.ResponseWriter.Write(b)
}

// WriteString avoids the []byte conversion io.WriteString would make.
func (rw *responseWriter) WriteString(s string) (int, error) {
	rw.noteWrite()
	return io.WriteString(rw.ResponseWriter, s)
}

// ReadFrom keeps net/http's sendfile path for handlers such as
// http.FileServer that copy into the ResponseWriter.
func (rw *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := rw.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{rw.ResponseWriter}, src)
	}
	if n > 0 {
		rw.noteWrite()
	}
	return n, err
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into
// ReadFrom.
type writerOnly struct{ io.Writer }

// Flush sends buffered data to the client; like net/http, flushing before a
// status commits to 200. It does nothing if the underlying writer cannot
// flush: http.Flusher has no way to say so (use http.ResponseController).
func (rw *responseWriter) Flush() {
	_ = rw.FlushError()
}

// FlushError is what http.ResponseController.Flush calls: it reports whether
// the underlying writer could flush.
func (rw *responseWriter) FlushError() error {
	err := http.NewResponseController(rw.ResponseWriter).Flush()
	if err == nil {
		rw.noteWrite()
	}
	return err
}

// Hijack takes over the connection through the underlying writer; it fails
// with an error wrapping http.ErrNotSupported when that cannot hijack.
func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err == nil {
		rw.hijacked = true
	}
	return conn, brw, err
}

// Unwrap lets http.ResponseController reach the underlying writer for the
// methods the wrapper does not implement (deadlines, full duplex).
func (rw *responseWriter) Unwrap() http.ResponseWriter {
	return rw.ResponseWriter
}
