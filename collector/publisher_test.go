package collector

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// source is a Source whose counters tests can move.
type source struct {
	mu sync.Mutex
	c  proto.Counters
}

func newSource() *source {
	return &source{c: proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)}}
}

func (s *source) add(success, errs uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.c.RequestsSuccess += success
	s.c.RequestsError += errs
	s.c.RequestsTotal += success + errs
	s.c.DurationCount += success + errs
	s.c.DurationSumNanos += (success + errs) * uint64(time.Millisecond)
	s.c.LatencyBuckets[0] += success + errs
}

func (s *source) read() proto.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	c.LatencyBuckets = append([]uint64(nil), s.c.LatencyBuckets...)
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(new(bytes.Buffer), nil)) }

func subscribe(t *testing.T, nc *nats.Conn, region, instance string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(proto.ReportSubject(region, instance))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func next(t *testing.T, sub *nats.Subscription) proto.Report {
	t.Helper()
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("waiting for a report: %v", err)
	}
	r, err := proto.DecodeReport(msg.Data)
	if err != nil {
		t.Fatalf("decode report: %v", err)
	}
	return r
}

func TestPublisherReports(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub := subscribe(t, nc, "eu", "gw-1")
	src := newSource()
	src.add(3, 1)
	clock := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	now := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		clock = clock.Add(time.Second)
		return clock
	}
	var published, failed atomic.Int64
	p, err := New(Config{
		NATS: nc, Region: "eu", Instance: "gw-1", Source: src.read,
		Interval: 20 * time.Millisecond, Now: now, Logger: quiet(),
		OnPublish: func(err error) {
			if err != nil {
				failed.Add(1)
			} else {
				published.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.BootID()) != 32 {
		t.Errorf("boot id %q, want 128 bits in hex", p.BootID())
	}
	if p.Subject() != "meridian.report.eu.gw-1" {
		t.Errorf("subject %q", p.Subject())
	}
	startTime := time.Date(2025, 3, 1, 12, 0, 1, 0, time.UTC) // New read the clock once

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()

	var last proto.Report
	for i := 1; i <= 5; i++ {
		r := next(t, sub)
		if r.Seq != uint64(i) {
			t.Fatalf("report %d has seq %d", i, r.Seq)
		}
		if r.BootID != p.BootID() || r.Region != "eu" || r.Instance != "gw-1" || r.Final ||
			r.Interval != 20*time.Millisecond || !r.StartTime.Equal(startTime) {
			t.Fatalf("report %+v", r)
		}
		if i > 1 && !r.Time.After(last.Time) {
			t.Fatalf("report %d time %v not after %v", i, r.Time, last.Time)
		}
		if r.RequestsTotal < last.RequestsTotal {
			t.Fatalf("counters went back: %d after %d", r.RequestsTotal, last.RequestsTotal)
		}
		last = r
		src.add(1, 0)
	}

	src.add(10, 2)
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	// Run ends by itself once the final report is out.
	if err := <-runDone; err != nil {
		t.Fatalf("run: %v", err)
	}
	var final proto.Report
	for final = next(t, sub); !final.Final; final = next(t, sub) {
		if final.Seq <= last.Seq {
			t.Fatalf("seq %d after %d", final.Seq, last.Seq)
		}
		last = final
	}
	want := src.read()
	if final.Seq != last.Seq+1 || final.RequestsTotal != want.RequestsTotal || final.RequestsError != want.RequestsError {
		t.Fatalf("final report %+v, want seq %d and counters %+v", final, last.Seq+1, want)
	}
	// Nothing follows the final report, not even after another Flush.
	if err := p.Flush(fctx); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	if _, err := sub.NextMsg(50 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a report followed the final one (err %v)", err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatalf("Run after the final report: %v", err)
	}
	if got := published.Load(); got != int64(final.Seq) || failed.Load() != 0 {
		t.Errorf("OnPublish saw %d successes and %d failures, want %d and 0", got, failed.Load(), final.Seq)
	}
}

// TestPublisherRoundTrip checks that what arrives decodes to exactly what
// the Source gave.
func TestPublisherRoundTrip(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub := subscribe(t, nc, "us-east", "edge_7")
	c := proto.Counters{
		RequestsTotal: 1 << 40, RequestsSuccess: 1<<40 - 5, RequestsError: 5,
		DurationSumNanos: 1<<63 + 12345, DurationCount: 1 << 40,
		LatencyBuckets:    []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1<<40 - 66},
		ActiveConnections: 42,
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	p, err := New(Config{NATS: nc, Region: "us-east", Instance: "edge_7", BootID: "boot-xyz",
		Source: func() proto.Counters { return c }, Now: func() time.Time { return at }, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := next(t, sub)
	want := proto.Report{Version: proto.ReportVersion, Instance: "edge_7", Region: "us-east",
		BootID: "boot-xyz", Seq: 1, Time: at, StartTime: at, Interval: DefaultInterval, Final: true, Counters: c}
	gotJSON, _ := got.Encode()
	wantJSON, _ := want.Encode()
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("round trip:\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

// TestPublisherInvalidCounters checks that a Source breaking the report
// invariants is reported as a failed publish, not sent.
func TestPublisherInvalidCounters(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub := subscribe(t, nc, "eu", "gw-1")
	var errs []error
	var logs bytes.Buffer
	p, err := New(Config{NATS: nc, Region: "eu", Instance: "gw-1",
		Source:    func() proto.Counters { return proto.Counters{RequestsTotal: 1} }, // no buckets, 0+0 != 1
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		OnPublish: func(err error) { errs = append(errs, err) }})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Flush(context.Background())
	if !errors.Is(err, proto.ErrMalformed) {
		t.Fatalf("flush: %v, want an error wrapping proto.ErrMalformed", err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], proto.ErrMalformed) {
		t.Fatalf("OnPublish saw %v", errs)
	}
	if !strings.Contains(logs.String(), "publishing reports is failing") {
		t.Errorf("failure not logged: %s", logs.String())
	}
	if _, err := sub.NextMsg(50 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("an invalid report was published (err %v)", err)
	}
}

// TestPublisherClosedConnection checks that publishing on a dead connection
// fails at once instead of hanging, and is counted.
func TestPublisherClosedConnection(t *testing.T) {
	_, nc := natstest.StartTest(t)
	src := newSource()
	var failures atomic.Int64
	p, err := New(Config{NATS: nc, Region: "eu", Instance: "gw-1", Source: src.read, Logger: quiet(),
		OnPublish: func(err error) {
			if err != nil {
				failures.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = p.Flush(ctx)
	if !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("flush on a closed connection: %v, want nats.ErrConnectionClosed", err)
	}
	if failures.Load() != 1 {
		t.Fatalf("%d failures counted, want 1", failures.Load())
	}
}

// TestPublisherReconnectBufferFull checks the outage case: while the client
// is disconnected and its reconnect buffer is full, publishing fails fast
// with nats.ErrReconnectBufExceeded.
func TestPublisherReconnectBufferFull(t *testing.T) {
	node, _ := natstest.StartTest(t)
	disconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(node.ClientURL(),
		nats.ReconnectBufSize(64), // smaller than one report
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := New(Config{NATS: nc, Region: "eu", Instance: "gw-1", Source: newSource().read, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Server().DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	<-disconnected
	start := time.Now()
	// The first report fills the reconnect buffer; the next cannot fit.
	if err := p.publish(false); err != nil {
		t.Fatalf("first publish during the outage: %v, want it buffered", err)
	}
	err = p.publish(false)
	if !errors.Is(err, nats.ErrReconnectBufExceeded) {
		t.Fatalf("publish with a full reconnect buffer: %v, want nats.ErrReconnectBufExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing during the outage took %s", d)
	}
}

func TestPublisherBootID(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub := subscribe(t, nc, "eu", "gw-1")
	mk := func() *Publisher {
		p, err := New(Config{NATS: nc, Region: "eu", Instance: "gw-1", Source: newSource().read,
			Interval: 10 * time.Millisecond, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := mk(), mk()
	if a.BootID() == b.BootID() {
		t.Fatalf("two publishers share boot id %q", a.BootID())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for range 3 {
		if r := next(t, sub); r.BootID != a.BootID() {
			t.Fatalf("report boot id %q, want the publisher's stable %q", r.BootID, a.BootID())
		}
	}
	if err := a.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("concurrent Run: %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	_, nc := natstest.StartTest(t)
	src := newSource().read
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no nats", Config{Region: "eu", Instance: "a", Source: src}, "NATS connection is required"},
		{"no source", Config{NATS: nc, Region: "eu", Instance: "a"}, "Source is required"},
		{"bad region", Config{NATS: nc, Region: "e u", Instance: "a", Source: src}, `region "e u" has character ' '`},
		{"no instance", Config{NATS: nc, Region: "eu", Source: src}, "instance is empty"},
		{"negative interval", Config{NATS: nc, Region: "eu", Instance: "a", Source: src, Interval: -time.Second}, "Interval -1s must not be negative"},
		{"long boot id", Config{NATS: nc, Region: "eu", Instance: "a", Source: src, BootID: strings.Repeat("x", 129)}, "at most 128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestPublisherResumesBootAndGatesOnBeforePublish checks what a collector
// restarted from a checkpoint relies on: the resumed boot id, start time and
// sequence continue, and a report whose BeforePublish fails is not sent.
func TestPublisherResumesBootAndGatesOnBeforePublish(t *testing.T) {
	_, nc := natstest.StartTest(t)
	sub := subscribe(t, nc, "eu", "col-1")
	src := newSource()
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var refuse atomic.Bool
	refuse.Store(true)
	var seen []uint64
	p, err := New(Config{
		NATS: nc, Region: "eu", Instance: "col-1", Source: src.read, Logger: quiet(),
		BootID: "resumed-boot", ResumeSeq: 41, StartTime: start,
		BeforePublish: func(r *proto.Report) error {
			seen = append(seen, r.Seq)
			if refuse.Load() {
				return errors.New("disk full")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.publish(false); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("publish with a failing BeforePublish = %v, want its error", err)
	}
	refuse.Store(false)
	if err := p.publish(false); err != nil {
		t.Fatal(err)
	}
	r := next(t, sub)
	if r.Seq != 43 || r.BootID != "resumed-boot" || !r.StartTime.Equal(start) {
		t.Fatalf("report seq %d boot %q start %v; want 43 (42 was refused), resumed-boot, %v", r.Seq, r.BootID, r.StartTime, start)
	}
	if len(seen) != 2 || seen[0] != 42 {
		t.Fatalf("BeforePublish saw seqs %v, want [42 43]", seen)
	}
	if _, err := New(Config{NATS: nc, Region: "eu", Instance: "col-1", Source: src.read, ResumeSeq: 3}); err == nil {
		t.Fatal("ResumeSeq without a BootID was accepted")
	}
}
