package proto

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func validReport() Report {
	return Report{
		Version: ReportVersion, Instance: "gw-eu-1", Region: "eu", BootID: "b1", Seq: 3,
		Time: ts, StartTime: ts.Add(-time.Minute), Interval: time.Second,
		Counters: Counters{RequestsTotal: 10, RequestsSuccess: 7, RequestsError: 3,
			DurationSumNanos: 123456789, DurationCount: 10, ActiveConnections: 2,
			LatencyBuckets: make([]uint64, NumLatencyBuckets)},
	}
}

func TestReportRoundTrip(t *testing.T) {
	r := validReport()
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReport(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Instance != r.Instance || got.Seq != r.Seq || !got.Time.Equal(r.Time) || got.RequestsError != 3 ||
		got.Interval != time.Second || len(got.LatencyBuckets) != NumLatencyBuckets {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestReportValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Report)
		want   string
		is     error
	}{
		{"version", func(r *Report) { r.Version = 2 }, "version 2", ErrUnsupportedVersion},
		{"instance empty", func(r *Report) { r.Instance = "" }, "instance is empty", ErrMalformed},
		{"instance dot", func(r *Report) { r.Instance = "gw.1" }, "character '.'", ErrMalformed},
		{"region long", func(r *Report) { r.Region = strings.Repeat("r", 65) }, "longer than 64", ErrMalformed},
		{"boot id", func(r *Report) { r.BootID = "" }, "boot_id", ErrMalformed},
		{"seq zero", func(r *Report) { r.Seq = 0 }, "seq", ErrMalformed},
		{"time", func(r *Report) { r.Time = time.Time{} }, "time is missing", ErrMalformed},
		{"interval", func(r *Report) { r.Interval = 0 }, "interval_ns", ErrMalformed},
		{"sum mismatch", func(r *Report) { r.RequestsError = 4 }, "!= requests_total", ErrMalformed},
		{"negative gauge", func(r *Report) { r.ActiveConnections = -1 }, "negative", ErrMalformed},
		{"buckets", func(r *Report) { r.LatencyBuckets = r.LatencyBuckets[:3] }, "latency_buckets has 3", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := validReport()
			tc.mutate(&r)
			_, err := r.Encode()
			if err == nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestDecodeReportRejects(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"v":"1"}`, `{"v":1,"seq":-1}`, `{"v":9}`, strings.Repeat(" ", 20000)} {
		if _, err := DecodeReport([]byte(in)); err == nil {
			t.Errorf("accepted %q", in)
		}
	}
}

func FuzzDecodeReport(f *testing.F) {
	r := validReport()
	data, _ := r.Encode()
	f.Add(data)
	h := histOf([]time.Duration{time.Millisecond, time.Second, 2 * time.Minute})
	r.LatencyHistogram = &h
	data, _ = r.Encode()
	f.Add(data)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeReport(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if r.RequestsSuccess+r.RequestsError != r.RequestsTotal || len(r.LatencyBuckets) != NumLatencyBuckets {
			t.Fatalf("accepted inconsistent report %+v", r)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	s := sampleSnapshot()
	data, _ := s.Encode()
	f.Add(data)
	f.Add([]byte(`{"v":1,"scope":"region.eu"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSnapshot(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				// Scope parse errors come through json.Unmarshal; they must still be classified.
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if s.RequestsSuccess+s.RequestsError != s.RequestsTotal {
			t.Fatalf("accepted inconsistent snapshot %+v", s)
		}
	})
}

func TestScopeRoundTrip(t *testing.T) {
	for _, s := range []Scope{ClusterScope(), RegionScope("eu"), InstanceScope("gw-us-2")} {
		got, err := ParseScope(s.String())
		if err != nil || got != s {
			t.Fatalf("%v -> %q -> %v, %v", s, s.String(), got, err)
		}
	}
	for _, bad := range []string{"", "region", "region.", "region.a.b", "galaxy.x", "instance.x y"} {
		if _, err := ParseScope(bad); err == nil {
			t.Errorf("ParseScope(%q) accepted", bad)
		}
	}
	if got := SnapshotSubject(RegionScope("eu")); got != "meridian.snapshot.region.eu" {
		t.Fatal(got)
	}
	if got := ReportSubject("eu", "gw-1"); got != "meridian.report.eu.gw-1" {
		t.Fatal(got)
	}
}

func TestLatencyBucket(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{{0, 0}, {5 * time.Millisecond, 0}, {5*time.Millisecond + 1, 1}, {time.Second, 7}, {10 * time.Second, 10}, {time.Hour, 11}}
	for _, tc := range tests {
		if got := LatencyBucket(tc.d); got != tc.want {
			t.Errorf("LatencyBucket(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// decodeReportJSON is DecodeReport by encoding/json alone, as before the
// fast path.
func decodeReportJSON(data []byte) (Report, error) {
	r, err := decodeVersioned[Report]("report", data, maxReportSize, ReportVersion)
	if err == nil && r.LatencyHistogram != nil && !r.LatencyHistogram.Supported() {
		r.LatencyHistogram = nil
	}
	return r, err
}

// FuzzDecodeReportFast is differential: whenever the fast parser accepts
// an input, encoding/json must accept it too and read exactly the same
// report; and DecodeReport must give the same report or the same error as
// encoding/json alone.
func FuzzDecodeReportFast(f *testing.F) {
	r := validReport()
	data, _ := r.Encode()
	f.Add(data)
	h := histOf([]time.Duration{time.Millisecond, time.Second, 2 * time.Minute})
	r.LatencyHistogram = &h
	r.Final = true
	data, _ = r.Encode()
	f.Add(data)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(` { "v" : 2 , "seq" : 1 } `))
	f.Add([]byte(`{"v":1,"instance":"a\u0062","latency_hist":{"v":2}}`))
	f.Add([]byte(`{"v":1,"latency_buckets":[],"time":"2024-01-01T00:00:00+01:00","final":false,"latency_hist":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast Report
		if parseReportFast(data, &fast) {
			var slow Report
			if err := json.Unmarshal(data, &slow); err != nil {
				t.Fatalf("fast parser accepted what encoding/json rejects (%v): %q", err, data)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v\nslow %+v\nof %q", fast, slow, data)
			}
		}
		got, gotErr := DecodeReport(data)
		want, wantErr := decodeReportJSON(data)
		if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
			t.Fatalf("error %v, want %v, of %q", gotErr, wantErr, data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("report %+v\nwant %+v\nof %q", got, want, data)
		}
		// A decoder reusing its histogram across inputs reads the same.
		reused, reusedErr := fuzzDecoder.Decode(data)
		if (reusedErr == nil) != (gotErr == nil) || !reflect.DeepEqual(normalHist(reused), normalHist(got)) {
			t.Fatalf("decoder %+v, %v\nwant %+v, %v\nof %q", reused, reusedErr, got, gotErr, data)
		}
	})
}

var fuzzDecoder ReportDecoder

// normalHist drops the spare capacity a reused histogram has, which
// DeepEqual does not see anyway, and its identity.
func normalHist(r Report) Report {
	if r.LatencyHistogram != nil {
		h := r.LatencyHistogram.Clone()
		if len(h.Buckets) == 0 {
			h.Buckets = nil
		}
		r.LatencyHistogram = &h
	}
	return r
}
