package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSubscription(t *testing.T) {
	all := AllMetrics
	tests := []struct {
		name    string
		in      string
		want    Subscription
		wantErr []string // substrings the error must contain
	}{
		{"empty object is the default", `{}`, Subscription{all, 1, false}, nil},
		{"guide example with alias", `{"metrics":["requests_total","active_connections","response_time_avg"],"interval_seconds":2,"include_history":false}`,
			Subscription{SetOf(RequestsTotal, ActiveConnections, AvgResponseTime), 2, false}, nil},
		{"empty metrics means all", `{"metrics":[],"interval_seconds":5,"include_history":true}`, Subscription{all, 5, true}, nil},
		{"null fields take defaults", `{"metrics":null,"interval_seconds":null,"include_history":null}`, Subscription{all, 1, false}, nil},
		{"integral float interval", `{"interval_seconds":60.0}`, Subscription{all, 60, false}, nil},
		{"duplicates collapse", `{"metrics":["success_rate","success_rate"]}`, Subscription{SetOf(SuccessRate), 1, false}, nil},
		{"unknown fields ignored", `{"interval_seconds":3,"compression":"zstd"}`, Subscription{all, 3, false}, nil},
		{"canonical avg name", `{"metrics":["avg_response_time"]}`, Subscription{SetOf(AvgResponseTime), 1, false}, nil},

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
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseSubscription(f *testing.F) {
	for _, s := range []string{`{}`, `{"metrics":["requests_total"],"interval_seconds":2}`, `{"metrics":[],"include_history":true}`,
		`{"interval_seconds":0}`, `[]`, `{"metrics":[null]}`, "\xff\xfe"} {
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
	})
}
