package aggregator

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mergerWith tracks n instances, each with a distinct boot id, ticked a few
// times so that every scope has window samples.
func mergerWith(n int) *Merger {
	m := NewMerger(MergerConfig{})
	for i := range n {
		r := rp{inst: fmt.Sprintf("gw-%05d", i), region: fmt.Sprintf("r%d", i%7),
			boot: fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15), seq: 3, total: uint64(1000 + i), errs: uint64(i % 13), durMs: uint64(7 * i)}
		m.Apply(r.report(t0), t0)
	}
	for s := 1; s <= 5; s++ {
		m.Snapshots(t0.Add(time.Duration(s) * time.Second))
	}
	return m
}

func TestStateEncoding(t *testing.T) {
	for _, tc := range []struct {
		instances  int
		compressed bool
	}{
		{0, false}, {3, false}, {1000, true},
	} {
		t.Run(fmt.Sprint(tc.instances), func(t *testing.T) {
			st := mergerWith(tc.instances).State()
			data, err := EncodeState(&st)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.HasPrefix(data, gzipMagic); got != tc.compressed {
				t.Fatalf("compressed = %v, want %v (%d bytes)", got, tc.compressed, len(data))
			}
			back, err := DecodeState(data)
			if err != nil {
				t.Fatal(err)
			}
			again, err := EncodeState(&back)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, again) {
				t.Fatal("state changed in the round trip")
			}
			if tc.instances == 1000 {
				t.Logf("1000 instances: %d bytes gzipped (%d per instance)", len(data), len(data)/1000)
				if len(data) > 256<<10 {
					t.Errorf("1000 instances take %d bytes: too close to the 1 MB NATS payload", len(data))
				}
			}
		})
	}
}

func TestDecodeStateRejects(t *testing.T) {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	valid := gz([]byte(`{"v":1,"totals":{},"regions":[],"instances":[]}`))
	for name, data := range map[string][]byte{
		"empty":            nil,
		"not json":         []byte("merge"),
		"wrong version":    []byte(`{"v":2,"totals":{},"regions":[],"instances":[]}`),
		"broken invariant": []byte(`{"v":1,"totals":{"requests_total":1},"regions":[],"instances":[]}`),
		"truncated gzip":   valid[:len(valid)-6],
		"gzip of garbage":  gz([]byte("{{{")),
		"gzip header only": gzipMagic,
	} {
		if _, err := DecodeState(data); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: err = %v, want ErrInvalidState", name, err)
		}
	}
	if _, err := DecodeState(valid); err != nil {
		t.Errorf("valid gzipped state: %v", err)
	}
}

// FuzzDecodeState: whatever is in the state bucket, decoding returns a
// state that Restore accepts, or an ErrInvalidState; it never panics.
func FuzzDecodeState(f *testing.F) {
	small := mergerWith(2).State()
	plain, _ := EncodeState(&small)
	f.Add(plain)
	big := mergerWith(40).State()
	packed, _ := EncodeState(&big)
	f.Add(packed)
	f.Add([]byte(`{"v":1,"totals":{},"regions":[{"region":"eu","totals":{}}],"instances":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := DecodeState(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("error %v does not wrap ErrInvalidState", err)
			}
			return
		}
		if err := NewMerger(MergerConfig{}).Restore(st); err != nil {
			t.Fatalf("decoded state fails Restore: %v", err)
		}
	})
}

// TestLargeStateIsChunked runs a server whose maximum payload (64 KB)
// cannot hold the state of 2,000 instances in one message: it is written in
// chunks behind a manifest, read back exactly, rewritten in place, and a
// missing or altered chunk is refused as invalid, never half-restored.
func TestLargeStateIsChunked(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		MaxPayload: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	var logs bytes.Buffer
	// Without the election, so that writeState may write without a lease.
	a, err := New(Config{NATS: nc, ID: "agg-1", Logger: slog.New(slog.NewTextHandler(&logs, nil)), LeaderDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.js.CleanupPublisher()
	a.merger = mergerWith(2000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.stateKV, err = openStateBucket(ctx, a.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := a.merger.State()
	a.writeState(ctx, &want)
	if n := testutil.ToFloat64(a.metrics.stateErrors); n != 0 {
		t.Fatalf("state write errors = %v: %s", n, logs.String())
	}
	raw, err := a.stateKV.Get(ctx, StateKey)
	if err != nil || !bytes.HasPrefix(raw.Value(), chunkMagic) {
		t.Fatalf("StateKey holds no manifest: %v", err)
	}
	if a.stateSize.Load() <= 64<<10 {
		t.Fatalf("state of %d bytes did not need chunks: test too small", a.stateSize.Load())
	}
	// The gauges say what the bucket holds.
	m, _, err := parseManifest(raw.Value())
	if err != nil {
		t.Fatal(err)
	}
	if got := a.stateChunks.Load(); got != int64(m.Chunks) || m.Size != int(a.stateSize.Load()) {
		t.Fatalf("state_chunks %d, state_size_bytes %d; the manifest says %d chunks, %d bytes", got, a.stateSize.Load(), m.Chunks, m.Size)
	}
	read := func() (State, string, error) {
		data, _, gen, err := getState(ctx, a.stateKV, StateKey)
		if err != nil {
			return State{}, gen, err
		}
		st, err := DecodeState(data)
		return st, gen, err
	}
	got, gen1, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("the state read back differs from the one written")
	}
	// The next write fills the other slot and names it.
	a.writeState(ctx, &want)
	if _, gen2, err := read(); err != nil || gen2 == gen1 || !strings.HasPrefix(gen2, stateWriter("agg-1")+".") {
		t.Fatalf("second write: gen %q after %q, %v", gen2, gen1, err)
	}

	// Another leader's first write removes agg-1's chunks.
	data, rev, prev, err := getState(ctx, a.stateKV, StateKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := putState(ctx, a.stateKV, StateKey, data, rev, chunkSizeFor(nc.MaxPayload()), stateWriter("agg-2"), prev); err != nil {
		t.Fatal(err)
	}
	if _, err := a.stateKV.Get(ctx, chunkKey(StateKey, prev, 0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the previous writer's chunk is still there: %v", err)
	}
	if got, _, err := read(); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("state after the other writer: %v", err)
	}

	// An altered chunk, then a missing one: invalid, not restored.
	_, _, gen, _ := getState(ctx, a.stateKV, StateKey)
	if _, err := a.stateKV.Put(ctx, chunkKey(StateKey, gen, 1), []byte("altered")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("altered chunk: %v, want ErrInvalidState", err)
	}
	if err := a.stateKV.Purge(ctx, chunkKey(StateKey, gen, 0)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(); !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing chunk: %v, want ErrInvalidState naming it", err)
	}
}

func TestDurationSumWrapIsNotAReset(t *testing.T) {
	m := NewMerger(MergerConfig{})
	r := rp{inst: "gw-1", region: "eu", boot: "a", seq: 1, total: 10}.report(t0)
	r.DurationSumNanos = ^uint64(0) - uint64(time.Second) + 1 // 1s below the wrap
	m.Apply(r, t0)
	for s := range 12 { // a full window, so that the mean covers only what follows
		m.Snapshots(t0.Add(time.Duration(s) * time.Second))
	}
	// 10 more requests of 300ms each wrap the instance's own sum.
	r.Seq, r.RequestsTotal, r.RequestsSuccess, r.DurationCount = 2, 20, 20, 20
	r.DurationSumNanos += uint64(3 * time.Second)
	now := t0.Add(12 * time.Second)
	if got := m.Apply(r, now); got != OutcomeApplied {
		t.Fatalf("Apply of a wrapped duration sum = %v, want applied", got)
	}
	s := m.Snapshots(now)
	for _, sc := range s {
		if sc.RequestsTotal != 20 || sc.DurationCount != 20 || sc.AvgResponseTimeMs != 300 {
			t.Fatalf("%s after the wrap: total %d, count %d, avg %vms; want 20, 20, 300ms",
				sc.Scope, sc.RequestsTotal, sc.DurationCount, sc.AvgResponseTimeMs)
		}
		if sc.DurationSumNanos != r.DurationSumNanos {
			t.Fatalf("%s duration sum %d, want the instance's %d (mod 2^64)", sc.Scope, sc.DurationSumNanos, r.DurationSumNanos)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`MSTC{"gen":"abc.a","chunks":2,"size":10,"sha256":"` + strings.Repeat("0", 64) + `"}`))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`MSTC{"chunks":-1}`))
	f.Add([]byte(`MSTC`))
	f.Fuzz(func(t *testing.T, value []byte) {
		m, chunked, err := parseManifest(value)
		if err != nil {
			if !chunked || !errors.Is(err, ErrInvalidState) {
				t.Fatalf("error %v (chunked %v) is not ErrInvalidState", err, chunked)
			}
			return
		}
		if chunked && (m.Chunks < 1 || m.Chunks > maxChunks || m.Size < m.Chunks || m.Gen == "") {
			t.Fatalf("accepted manifest %+v", m)
		}
	})
}
