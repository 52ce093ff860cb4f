package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs:\n got: %s\nwant: %s", name, got, want)
	}
}

var ts = time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC)

func sampleSnapshot() Snapshot {
	return Snapshot{
		Version: SnapshotVersion, Time: ts,
		RequestsTotal: 1547, RequestsSuccess: 1520, RequestsError: 27, ActiveConnections: 15,
		AvgResponseTimeMs: 45.2, SuccessRate: SuccessRateOf(1520, 1547),
		LatencyMs: [NumLatencyQuantiles]float64{SlotMillis(KeySlot(-286)), SlotMillis(KeySlot(-200)), 121.4, 250, 1234.5678},
	}
}

func TestEventsGolden(t *testing.T) {
	s := sampleSnapshot()
	// A snapshot in another zone must still be written in UTC with "Z".
	s.Time = ts.In(time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		got  []byte
	}{
		{"snapshot_all.json", AppendSnapshotEvent(nil, &s, GuideMetrics)},
		{"snapshot_latency.json", AppendSnapshotEvent(nil, &s, GuideMetrics|SetOf(LatencyP50, LatencyP90, LatencyP95, LatencyP99, LatencyMax))},
		{"snapshot_subset.json", AppendSnapshotEvent(nil, &s, SetOf(RequestsTotal, AvgResponseTime))},
		{"timeseries.json", AppendTimeSeriesEvent(nil, RequestsTotal, []Point{{ts.Add(-time.Hour), 1000}, {ts.Add(-45 * time.Minute), 1200.5}})},
		{"timeseries_empty.json", AppendTimeSeriesEvent(nil, SuccessRate, nil)},
		{"error.json", AppendErrorEvent(nil, "bad \"x\"\n\x01 é \xff")},
		{"heartbeat.json", AppendHeartbeatEvent(nil, ts.Add(1500*time.Millisecond))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !json.Valid(tc.got) {
				t.Fatalf("invalid JSON: %s", tc.got)
			}
			golden(t, tc.name, tc.got)
		})
	}
}

func TestSnapshotEventRoundTrip(t *testing.T) {
	s := sampleSnapshot()
	for set := MetricSet(1); set <= AllMetrics; set++ {
		ev, err := DecodeEvent(AppendSnapshotEvent(nil, &s, set))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != EventSnapshot || !ev.Timestamp.Equal(ts) || len(ev.Values) != set.Len() {
			t.Fatalf("set %b: %+v", set, ev)
		}
		for _, m := range set.Metrics() {
			want := s.Value(m)
			if d := ev.Values[m.String()] - want; d > 0.001 || d < -0.001 {
				t.Fatalf("set %b: %s = %v, want %v", set, m, ev.Values[m.String()], want)
			}
		}
	}
}

func TestAppendSnapshotEventNoAllocs(t *testing.T) {
	s := sampleSnapshot()
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendSnapshotEvent(buf[:0], &s, AllMetrics) })
	if allocs != 0 {
		t.Fatalf("AppendSnapshotEvent allocates %v times per call", allocs)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	s := sampleSnapshot()
	f.Add(AppendSnapshotEvent(nil, &s, AllMetrics))
	f.Add(AppendTimeSeriesEvent(nil, RequestsTotal, []Point{{ts, 1}}))
	f.Add(AppendErrorEvent(nil, "x"))
	f.Add(AppendHeartbeatEvent(nil, ts))
	f.Add([]byte(`{"type":"Snapshot","requests_total":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeEvent(data)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		_ = ev
	})
}

func FuzzAppendErrorEvent(f *testing.F) {
	f.Add("plain")
	f.Add("quote\" backslash\\ nl\n nul\x00 bad\xff")
	f.Fuzz(func(t *testing.T, msg string) {
		out := AppendErrorEvent(nil, msg)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON for %q: %s", msg, out)
		}
		var back struct{ Message string }
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(msg) && back.Message != msg {
			t.Fatalf("round trip %q -> %q", msg, back.Message)
		}
	})
}
