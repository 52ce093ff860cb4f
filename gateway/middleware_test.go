package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/integration/wait"
)

// classCounts reads a Recorder's per-class counts, indexed like classNames.
func classCounts(r *Recorder) [numClasses]uint64 {
	var rd reading
	r.read(&rd)
	return rd.classes
}

// onlyStatus checks that rec holds exactly one request, of status's class.
func onlyStatus(t *testing.T, rec *Recorder, status int) {
	t.Helper()
	got := classCounts(rec)
	var want [numClasses]uint64
	want[classOf(status)] = 1
	if got != want {
		t.Errorf("class counts = %v, want one %s request (status %d)", got, classNames[classOf(status)], status)
	}
	if a := rec.Active(); a != 0 {
		t.Errorf("in flight = %d after the request ended, want 0", a)
	}
}

// TestMiddlewareStatus drives handlers directly with a ResponseRecorder and
// checks the status each is recorded with.
func TestMiddlewareStatus(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    int
	}{
		{"explicit status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) }, 404},
		{"write without header", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }, 200},
		{"nothing written", func(w http.ResponseWriter, r *http.Request) {}, 200},
		{"first status wins", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.WriteHeader(http.StatusOK)
		}, 503},
		{"status after body is ignored", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("x"))
			w.WriteHeader(http.StatusInternalServerError)
		}, 200},
		{"1xx then final", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusContinue)
			w.WriteHeader(http.StatusNoContent)
		}, 204},
		{"1xx then body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			w.Write([]byte("x"))
		}, 200},
		{"1xx only", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusProcessing) }, 200},
		{"flush commits 200", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			w.WriteHeader(http.StatusTeapot)
		}, 200},
		{"WriteString", func(w http.ResponseWriter, r *http.Request) {
			w.(io.StringWriter).WriteString("hello")
		}, 200},
		{"ReadFrom", func(w http.ResponseWriter, r *http.Request) {
			w.(io.ReaderFrom).ReadFrom(strings.NewReader("hello"))
		}, 200},
		{"ReadFrom of nothing then status", func(w http.ResponseWriter, r *http.Request) {
			w.(io.ReaderFrom).ReadFrom(strings.NewReader(""))
			w.WriteHeader(http.StatusBadGateway)
		}, 502},
		{"status above 599", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(600) }, 600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec Recorder
			h := Middleware(&rec, tt.handler)
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
			onlyStatus(t, &rec, tt.want)
		})
	}
}

// TestMiddlewarePoolReuse checks that a pooled wrapper carries nothing over
// from the previous request.
func TestMiddlewarePoolReuse(t *testing.T) {
	var rec Recorder
	statuses := []int{500, 0, 404, 0, 0, 302}
	h := Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, err := strconv.Atoi(r.URL.Query().Get("s")); err == nil {
			w.WriteHeader(code)
		}
	}))
	var want [numClasses]uint64
	for _, s := range statuses {
		target := "/"
		if s != 0 {
			target = "/?s=" + strconv.Itoa(s)
		} else {
			s = 200
		}
		want[classOf(s)]++
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", target, nil))
	}
	if got := classCounts(&rec); got != want {
		t.Fatalf("class counts = %v, want %v", got, want)
	}
}

// TestMiddlewareCancelledRequest is the client that goes away before the
// handler answers: 499, and the in-flight gauge comes back to zero.
func TestMiddlewareCancelledRequest(t *testing.T) {
	var rec Recorder
	arrived := make(chan struct{})
	h := Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // a handler that honours cancellation and writes nothing
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	if a := rec.Active(); a != 1 {
		t.Errorf("in flight while the handler runs = %d, want 1", a)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error = %v, want context.Canceled", err)
	}
	wait.For(t, 5*time.Second, "the cancelled request to be recorded", func() bool { return rec.Counters().RequestsTotal == 1 })
	onlyStatus(t, &rec, StatusClientClosedRequest)
}

// TestMiddlewarePanic checks a panicking handler: recorded as 500 (499 if
// the client had gone), the in-flight gauge released, and the very same panic
// value passed on.
func TestMiddlewarePanic(t *testing.T) {
	sentinel := errors.New("boom")
	tests := []struct {
		name      string
		cancelled bool
		value     any
		want      int
	}{
		{"panic", false, sentinel, 500},
		{"abort handler", false, http.ErrAbortHandler, 500},
		{"panic after client left", true, sentinel, 499},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec Recorder
			h := Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK) // even a started response is a failure when the handler panics
				panic(tt.value)
			}))
			req := httptest.NewRequest("GET", "/", nil)
			if tt.cancelled {
				ctx, cancel := context.WithCancel(req.Context())
				cancel()
				req = req.WithContext(ctx)
			}
			var got any
			func() {
				defer func() { got = recover() }()
				h.ServeHTTP(httptest.NewRecorder(), req)
			}()
			if got != tt.value {
				t.Fatalf("recovered %v, want the handler's own panic value %v", got, tt.value)
			}
			onlyStatus(t, &rec, tt.want)
		})
	}
}

// TestMiddlewarePanicOverHTTP checks the same through a real server, where
// net/http recovers the panic and drops the connection.
func TestMiddlewarePanicOverHTTP(t *testing.T) {
	var rec Recorder
	srv := httptest.NewUnstartedServer(Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("handler bug")
	})))
	srv.Config.ErrorLog = discardLog()
	srv.Start()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got a response (%s) from a panicking handler", resp.Status)
	}
	wait.For(t, 5*time.Second, "the panic to be recorded", func() bool { return rec.Counters().RequestsTotal == 1 })
	onlyStatus(t, &rec, 500)
}

// TestMiddlewareGoexit covers the other way a handler can end without
// returning (t.FailNow in a test handler, runtime.Goexit).
func TestMiddlewareGoexit(t *testing.T) {
	var rec Recorder
	h := Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		runtime.Goexit()
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
	<-done
	onlyStatus(t, &rec, 500)
}

// TestMiddlewareFlushStreams checks that flushing reaches the client while
// the handler is still running, via the http.Flusher interface and via
// http.ResponseController.
func TestMiddlewareFlushStreams(t *testing.T) {
	for _, via := range []string{"Flusher", "ResponseController"} {
		t.Run(via, func(t *testing.T) {
			var rec Recorder
			release := make(chan struct{})
			srv := httptest.NewServer(Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "first\n")
				if via == "Flusher" {
					w.(http.Flusher).Flush()
				} else if err := http.NewResponseController(w).Flush(); err != nil {
					t.Errorf("ResponseController.Flush: %v", err)
				}
				<-release
				io.WriteString(w, "second\n")
			})))
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				close(release)
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n') // only possible if the flush went out
			close(release)
			if err != nil || line != "first\n" {
				t.Fatalf("first line = %q, %v", line, err)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != "second\n" {
				t.Fatalf("rest = %q", rest)
			}
			wait.For(t, 5*time.Second, "the request to be recorded", func() bool { return rec.Counters().RequestsTotal == 1 })
			onlyStatus(t, &rec, 200)
		})
	}
}

// TestMiddlewareResponseControllerDeadlines checks that Unwrap lets
// http.ResponseController reach methods the wrapper does not implement.
func TestMiddlewareResponseControllerDeadlines(t *testing.T) {
	var rec Recorder
	srv := httptest.NewServer(Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the wrapper: %v", err)
		}
		if err := rc.EnableFullDuplex(); err != nil {
			t.Errorf("EnableFullDuplex through the wrapper: %v", err)
		}
		w.WriteHeader(http.StatusAccepted)
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wait.For(t, 5*time.Second, "the request to be recorded", func() bool { return rec.Counters().RequestsTotal == 1 })
	onlyStatus(t, &rec, 202)
}

// TestMiddlewareHijack checks that a hijacking handler (a protocol switch)
// works through the wrapper, both as http.Hijacker and through
// http.ResponseController, and is recorded as 101.
func TestMiddlewareHijack(t *testing.T) {
	for _, via := range []string{"Hijacker", "ResponseController"} {
		t.Run(via, func(t *testing.T) {
			var rec Recorder
			srv := httptest.NewServer(Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var conn net.Conn
				var brw *bufio.ReadWriter
				var err error
				if via == "Hijacker" {
					conn, brw, err = w.(http.Hijacker).Hijack()
				} else {
					conn, brw, err = http.NewResponseController(w).Hijack()
				}
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				defer conn.Close()
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				line, _ := brw.ReadString('\n')
				brw.WriteString(line)
				brw.Flush()
			})))
			defer srv.Close()

			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade response %v, %v", resp, err)
			}
			io.WriteString(conn, "ping\n")
			if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
				t.Fatalf("echo = %q, %v", line, err)
			}
			wait.For(t, 5*time.Second, "the upgrade to be recorded", func() bool { return rec.Counters().RequestsTotal == 1 })
			onlyStatus(t, &rec, 101)
		})
	}
}

// TestMiddlewareHijackUnsupported checks the error path on a writer that
// cannot hijack: an error wrapping http.ErrNotSupported, and the request is
// recorded by what the handler then writes.
func TestMiddlewareHijackUnsupported(t *testing.T) {
	var rec Recorder
	h := Middleware(&rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := w.(http.Hijacker).Hijack(); !errors.Is(err, http.ErrNotSupported) {
			t.Errorf("Hijack on a ResponseRecorder: %v, want http.ErrNotSupported", err)
		}
		w.WriteHeader(http.StatusNotImplemented)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	onlyStatus(t, &rec, 501)
}

func TestMiddlewareNilArguments(t *testing.T) {
	for name, f := range map[string]func(){
		"nil recorder": func() { Middleware(nil, http.NotFoundHandler()) },
		"nil handler":  func() { Middleware(new(Recorder), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("Middleware accepted a nil argument")
				}
			}()
			f()
		})
	}
}
