package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// nopWriter is a reusable ResponseWriter that allocates nothing, so the
// benchmark measures only the middleware.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}
func (w *nopWriter) Flush()                      {}

var benchBody = []byte("ok\n")

func benchHandler(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	w.Write(benchBody)
	w.(http.Flusher).Flush()
}

// BenchmarkMiddleware measures the middleware alone around a trivial
// handler that sets a status, writes and flushes. It must report
// 0 allocs/op: the wrapper comes from a pool and recording is atomics.
func BenchmarkMiddleware(b *testing.B) {
	var rec Recorder
	h := Middleware(&rec, http.HandlerFunc(benchHandler))
	req := httptest.NewRequest("GET", "/", nil)
	b.Run("serial", func(b *testing.B) {
		w := &nopWriter{h: make(http.Header)}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &nopWriter{h: make(http.Header)}
			for pb.Next() {
				h.ServeHTTP(w, req)
			}
		})
	})
}

// BenchmarkMiddlewareOverHTTP serves the same handler over real loopback
// HTTP with and without the middleware; the difference in allocs/op is what
// the middleware adds on top of net/http (expected: none).
func BenchmarkMiddlewareOverHTTP(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "bare"
		var h http.Handler = http.HandlerFunc(benchHandler)
		if wrapped {
			name = "middleware"
			h = Middleware(new(Recorder), h)
		}
		b.Run(name, func(b *testing.B) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			client := srv.Client()
			req, _ := http.NewRequest("GET", srv.URL, nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

func TestMiddlewareDoesNotAllocate(t *testing.T) {
	var rec Recorder
	h := Middleware(&rec, http.HandlerFunc(benchHandler))
	req := httptest.NewRequest("GET", "/", nil)
	w := &nopWriter{h: make(http.Header)}
	h.ServeHTTP(w, req) // fill the pool
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, req) }); n != 0 {
		t.Fatalf("the middleware allocates %v times per request, want 0", n)
	}
}
