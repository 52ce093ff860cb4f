package proto

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func def() Subscription { return DefaultSubscription() }

func with(f func(*Subscription)) Subscription {
	s := DefaultSubscription()
	f(&s)
	return s
}

func TestParseSubscription(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Subscription
		wantErr []string // substrings the error must contain
	}{
		{"empty object is the default", `{}`, def(), nil},
		{"guide example with alias", `{"metrics":["requests_total","active_connections","response_time_avg"],"interval_seconds":2,"include_history":false}`,
			with(func(s *Subscription) {
				s.Metrics = SetOf(RequestsTotal, ActiveConnections, AvgResponseTime)
				s.IntervalSeconds = 2
			}), nil},
		{"region scope and history window", `{"region":"eu","include_history":true,"history_seconds":86400,"history_points":100}`,
			with(func(s *Subscription) {
				s.Scope = RegionScope("eu")
				s.IncludeHistory = true
				s.HistorySeconds = 86400
				s.HistoryPoints = 100
			}), nil},
		{"instance scope and since", `{"instance":"gw-eu-1","since":"2024-11-07T10:30:00Z"}`,
			with(func(s *Subscription) {
				s.Scope = InstanceScope("gw-eu-1")
				s.Since = time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC)
			}), nil},
		{"both scopes", `{"region":"eu","instance":"gw-eu-1"}`, Subscription{}, []string{"not both"}},
		{"bad region", `{"region":"e u"}`, Subscription{}, []string{"region", "letters, digits"}},
		{"region not string", `{"region":1}`, Subscription{}, []string{"region must be a string"}},
		{"history_seconds zero", `{"history_seconds":0}`, Subscription{}, []string{"history_seconds", "1 to 2592000"}},
		{"history_points too many", `{"history_points":20000}`, Subscription{}, []string{"history_points", "1 to 10000"}},
		{"bad since", `{"since":"yesterday"}`, Subscription{}, []string{"since", "RFC 3339"}},
		{"strict metrics", `{"metrics":["requests_total"],"strict_metrics":true}`,
			with(func(s *Subscription) { s.Metrics = SetOf(RequestsTotal); s.StrictMetrics = true }), nil},
		{"strict metrics null", `{"strict_metrics":null}`, def(), nil},
		{"strict metrics not bool", `{"strict_metrics":1}`, Subscription{}, []string{"strict_metrics must be true or false", "got 1"}},
		// Year 0 parses, but cannot be marshalled (it leaked a Go JSON error) or replayed.
		{"since year 0", `{"since":"0000-01-01T00:00:00Z"}`, Subscription{}, []string{"since", "out of range", "1970-01-01T00:00:00Z"}},
		{"since before the epoch", `{"since":"1969-12-31T23:59:59+00:00"}`, Subscription{}, []string{"out of range"}},
		{"since year 0 with an offset", `{"since":"0000-01-01T00:30:00+01:00"}`, Subscription{}, []string{"out of range"}},
		{"multi-byte character named as sent", `{"region":"eü"}`, Subscription{}, []string{`has character 'ü'`}},
		{"invalid byte named as such", "{\"region\":\"e\xff\"}", Subscription{}, []string{`character`}},
		{"empty metrics means the guide's", `{"metrics":[],"interval_seconds":5,"include_history":true}`, with(func(s *Subscription) { s.IntervalSeconds = 5; s.IncludeHistory = true }), nil},
		{"null fields take defaults", `{"metrics":null,"interval_seconds":null,"include_history":null}`, def(), nil},
		{"integral float interval", `{"interval_seconds":60.0}`, with(func(s *Subscription) { s.IntervalSeconds = 60 }), nil},
		{"duplicates collapse", `{"metrics":["success_rate","success_rate"]}`, with(func(s *Subscription) { s.Metrics = SetOf(SuccessRate) }), nil},
		{"unknown fields ignored", `{"interval_seconds":3,"compression":"zstd"}`, with(func(s *Subscription) { s.IntervalSeconds = 3 }), nil},
		{"canonical avg name", `{"metrics":["avg_response_time"]}`, with(func(s *Subscription) { s.Metrics = SetOf(AvgResponseTime) }), nil},

		{"not json", `metrics please`, Subscription{}, []string{"JSON object"}},
		{"array not object", `["requests_total"]`, Subscription{}, []string{"JSON object"}},
		{"null message", `null`, Subscription{}, []string{"JSON object"}},
		{"interval zero", `{"interval_seconds":0}`, Subscription{}, []string{"interval_seconds", "1 to 60", "got 0"}},
		{"interval 61", `{"interval_seconds":61}`, Subscription{}, []string{"1 to 60", "got 61"}},
		{"interval negative", `{"interval_seconds":-5}`, Subscription{}, []string{"1 to 60"}},
		{"interval fraction", `{"interval_seconds":1.5}`, Subscription{}, []string{"integer", "got 1.5"}},
		{"interval string", `{"interval_seconds":"2"}`, Subscription{}, []string{"integer", `got "2"`}},
		{"interval huge", `{"interval_seconds":1e300}`, Subscription{}, []string{"1 to 60"}},
		{"metrics not array", `{"metrics":"requests_total"}`, Subscription{}, []string{"array of metric names", "requests_total, requests_success"}},
		{"metrics with number", `{"metrics":[1]}`, Subscription{}, []string{"only strings"}},
		{"unknown metric", `{"metrics":["requests_total","p99","cpu"]}`, Subscription{}, []string{`unknown metric "p99", "cpu"`, "valid names: requests_total", "response_time_avg"}},
		{"history not bool", `{"include_history":"yes"}`, Subscription{}, []string{"include_history must be true or false", `got "yes"`}},
		{"too many metrics", `{"metrics":[` + strings.Repeat(`"requests_total",`, 64) + `"requests_total"]}`, Subscription{}, []string{"at most 64"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSubscription([]byte(tc.in))
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("got %+v, want error", got)
				}
				if !errors.Is(err, ErrInvalidSubscription) {
					t.Errorf("error %v does not wrap ErrInvalidSubscription", err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !got.Since.Equal(tc.want.Since) {
				t.Fatalf("since %v, want %v", got.Since, tc.want.Since)
			}
			got.Since, tc.want.Since = time.Time{}, time.Time{}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseSubscription(f *testing.F) {
	for _, s := range []string{`{}`, `{"metrics":["requests_total"],"interval_seconds":2}`, `{"metrics":[],"include_history":true}`,
		`{"metrics":["requests_total"],"strict_metrics":true}`, `{"interval_seconds":0}`, `[]`, `{"metrics":[null]}`, "\xff\xfe"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sub, err := ParseSubscription(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidSubscription) {
				t.Fatalf("error %v does not wrap ErrInvalidSubscription", err)
			}
			return
		}
		if sub.IntervalSeconds < MinIntervalSeconds || sub.IntervalSeconds > MaxIntervalSeconds {
			t.Fatalf("accepted interval %d", sub.IntervalSeconds)
		}
		if sub.Metrics == 0 || sub.Metrics&^AllMetrics != 0 {
			t.Fatalf("accepted metric set %b", sub.Metrics)
		}
		if snap := sub.SnapshotMetrics(); snap&sub.Metrics != sub.Metrics || (!sub.StrictMetrics && snap&GuideMetrics != GuideMetrics) {
			t.Fatalf("snapshot set %b for %+v", snap, sub)
		}
	})
}

func TestSnapshotMetrics(t *testing.T) {
	// extra stands for any metric after the guide's six, present or future.
	extra := GuideMetrics + 1
	tests := []struct {
		name    string
		metrics MetricSet
		strict  bool
		want    MetricSet
	}{
		{"default: the guide's six", GuideMetrics, false, GuideMetrics},
		{"a subset still gets all six", SetOf(RequestsTotal, ActiveConnections), false, GuideMetrics},
		{"a named extra is added", SetOf(RequestsTotal) | extra, false, GuideMetrics | extra},
		{"strict: exactly what was named", SetOf(RequestsTotal, ActiveConnections), true, SetOf(RequestsTotal, ActiveConnections)},
		{"strict extra alone", extra, true, extra},
		{"strict with nothing named: the guide's six", 0, true, GuideMetrics},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := Subscription{Metrics: tt.metrics, StrictMetrics: tt.strict}
			if got := sub.SnapshotMetrics(); got != tt.want {
				t.Errorf("SnapshotMetrics = %b, want %b", got, tt.want)
			}
		})
	}
}

func TestGuideMetricsAreTheGuidesSix(t *testing.T) {
	var names []string
	for _, m := range GuideMetrics.Metrics() {
		names = append(names, m.String())
	}
	want := "requests_total,requests_success,requests_error,active_connections,avg_response_time,success_rate"
	if got := strings.Join(names, ","); got != want {
		t.Errorf("GuideMetrics = %s, want %s", got, want)
	}
}
