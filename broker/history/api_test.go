package history

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/proto"
)

// startStream starts an embedded JetStream server with the history stream
// and returns a context bounding the test's calls (20 s) and the stream's
// JetStream.
func startStream(t *testing.T) (context.Context, jetstream.JetStream) {
	t.Helper()
	_, nc := natstest.StartTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	return ctx, js
}

func startAPI(t *testing.T, now time.Time) (*httptest.Server, jetstream.JetStream) {
	t.Helper()
	_, js := startStream(t)
	api, err := NewAPI(APIConfig{JetStream: js, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv, js
}

func publish(t *testing.T, js jetstream.JetStream, s proto.Snapshot) {
	t.Helper()
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), proto.SnapshotSubject(s.Scope), data); err != nil {
		t.Fatal(err)
	}
}

func getJSON(t *testing.T, u string, wantStatus int, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != wantStatus {
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		t.Fatalf("GET %s: status %d (%v), want %d", u, resp.StatusCode, body, wantStatus)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestAPIListAndHistory(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	srv, js := startAPI(t, now)
	// 60 s of cluster history: 10 requests a second, 1 error every 10 s.
	for i := 0; i < 60; i++ {
		s := snap(0, uint64(10*(i+1)), uint64(i/10+1), int64(i%3), uint64(20*10*(i+1)), uint64(10*(i+1)))
		s.Time = now.Add(time.Duration(i-59) * time.Second)
		publish(t, js, s)
		if i == 59 {
			s.Scope = proto.RegionScope("eu")
			publish(t, js, s)
		}
	}

	var list struct {
		Metrics []MetricInfo
		Aliases map[string]string
		Scopes  []string
		History historyInfo
	}
	getJSON(t, srv.URL+"/api/metrics/list", http.StatusOK, &list)
	if len(list.Metrics) != proto.NumMetrics || list.Metrics[4].Name != "avg_response_time" || list.Aliases["response_time_avg"] != "avg_response_time" {
		t.Fatalf("list metrics %+v aliases %v", list.Metrics, list.Aliases)
	}
	// Names, kinds and units come from proto; the wire stays what it was.
	var kinds []string
	for _, mi := range list.Metrics {
		kinds = append(kinds, mi.Name+":"+mi.Kind+":"+mi.Unit)
	}
	if got, want := strings.Join(kinds, " "), "requests_total:counter:requests requests_success:counter:requests "+
		"requests_error:counter:requests active_connections:gauge:requests avg_response_time:ratio:milliseconds "+
		"success_rate:ratio:percent"; !strings.HasPrefix(got, want) {
		t.Errorf("list kinds\n got %s\nwant %s", got, want)
	}
	if strings.Join(list.Scopes, ",") != "cluster,region.eu" {
		t.Fatalf("scopes %v", list.Scopes)
	}
	if list.History.RetentionSeconds != 86400 || list.History.ResolutionSeconds != 1 {
		t.Fatalf("history info %+v", list.History)
	}

	var h historyResponse
	q := url.Values{"metric": {"requests_total"}, "start": {now.Add(-59 * time.Second).Format(time.RFC3339)},
		"end": {now.Format(time.RFC3339)}, "step": {"10s"}}
	getJSON(t, srv.URL+"/api/metrics/history?"+q.Encode(), http.StatusOK, &h)
	if h.Metric != "requests_total" || h.Scope != "cluster" || h.StepSeconds != 10 || h.Source != "1s" {
		t.Fatalf("history header %+v", h)
	}
	if n := len(h.DataPoints); n < 6 || n > 7 || h.DataPoints[n-1].Value != 600 {
		t.Fatalf("points %v: want 6-7 buckets of 10 s ending at 600", h.DataPoints)
	}
	// The alias, a unix-seconds range and the default step; the avg is 20 ms.
	q = url.Values{"metric": {"response_time_avg"}, "start": {fmt.Sprint(now.Add(-30 * time.Second).Unix())}, "end": {fmt.Sprint(now.Unix())}}
	getJSON(t, srv.URL+"/api/metrics/history?"+q.Encode(), http.StatusOK, &h)
	if h.Metric != "avg_response_time" || len(h.DataPoints) == 0 {
		t.Fatalf("alias query: %+v", h)
	}
	for _, p := range h.DataPoints {
		if p.Value != 20 {
			t.Fatalf("avg point %v, want 20 ms", p)
		}
	}
	// A scope by region parameter.
	q = url.Values{"metric": {"requests_total"}, "region": {"eu"}, "start": {now.Add(-10 * time.Second).Format(time.RFC3339)}}
	getJSON(t, srv.URL+"/api/metrics/history?"+q.Encode(), http.StatusOK, &h)
	if h.Scope != "region.eu" || len(h.DataPoints) != 1 || h.DataPoints[0].Value != 600 {
		t.Fatalf("region query: %+v", h)
	}
}

func TestAPIRejectsBadParameters(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	srv, _ := startAPI(t, now)
	tests := []struct {
		query string
		want  string
	}{
		{"", `metric "" is unknown; valid: requests_total`},
		{"metric=p99", `metric "p99" is unknown`},
		{"metric=requests_total&scope=galaxy", "scope \"galaxy\": want cluster, region.<name> or instance.<name>"},
		{"metric=requests_total&region=eu&instance=gw-1", "not both"},
		{"metric=requests_total&start=yesterday", "start \"yesterday\": want an RFC 3339 time"},
		{"metric=requests_total&end=x", "end \"x\""},
		{"metric=requests_total&end=253402300800", "up to 253402300799"},
		{"metric=requests_total&start=-1", "start \"-1\""},
		{"metric=requests_total&start=2026-11-21T12:00:00Z&end=2026-11-21T11:00:00Z", "must be before end"},
		{"metric=requests_total&step=0", "at least 1s"},
		{"metric=requests_total&step=1.5s", "whole number of seconds"},
		{"metric=requests_total&step=fast", "want a duration"},
		{"metric=requests_total&start=2026-11-01T00:00:00Z&step=1s", "at most 11000 are served"},
	}
	for _, tc := range tests {
		var body map[string]string
		getJSON(t, srv.URL+"/api/metrics/history?"+tc.query, http.StatusBadRequest, &body)
		if !strings.Contains(body["error"], tc.want) {
			t.Errorf("%q: error %q, want it to contain %q", tc.query, body["error"], tc.want)
		}
	}
	// Unix seconds beyond 2262: f*1e9 overflowed int64 and came out in 1677.
	var far struct {
		End time.Time `json:"end"`
	}
	getJSON(t, srv.URL+"/api/metrics/history?metric=requests_total&end=99999999999&step=1h", http.StatusOK, &far)
	if want := time.Unix(99999999999, 0).UTC(); !far.End.Equal(want) {
		t.Errorf("end=99999999999 read as %s, want %s", far.End, want)
	}
	resp, err := http.Post(srv.URL+"/api/metrics/history", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}
