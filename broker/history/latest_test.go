package history

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

func TestAPILatest(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	srv, js := startAPI(t, now)
	for i := range 3 {
		s := snap(0, uint64(10*(i+1)), uint64(i), 2, uint64(30*10*(i+1)), uint64(10*(i+1)))
		s.Time = now.Add(time.Duration(i-2) * time.Second)
		s.Scope, s.Instances = proto.RegionScope("eu"), 2
		publish(t, js, s)
	}
	older := snap(0, 5, 0, 0, 0, 0)
	older.Time, older.Scope, older.Instances = now, proto.RegionScope("us"), 1
	publish(t, js, older)

	tests := []struct {
		query      url.Values
		status     int
		wantScope  string
		wantTotal  uint64
		wantInst   int
		wantErrSub string
	}{
		{url.Values{"scope": {"region.eu"}}, http.StatusOK, "region.eu", 30, 2, ""},
		{url.Values{"region": {"eu"}}, http.StatusOK, "region.eu", 30, 2, ""},
		{url.Values{"scope": {"region.us"}}, http.StatusOK, "region.us", 5, 1, ""},
		{url.Values{"scope": {"region.ap"}}, http.StatusNotFound, "", 0, 0, "region.ap has no snapshots"},
		{url.Values{"scope": {"planet.mars"}}, http.StatusBadRequest, "", 0, 0, "want cluster, region.<name> or instance.<name>"},
		{url.Values{"region": {"eu"}, "instance": {"gw-1"}}, http.StatusBadRequest, "", 0, 0, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.query.Encode(), func(t *testing.T) {
			u := srv.URL + "/api/metrics/latest?" + tt.query.Encode()
			if tt.status != http.StatusOK {
				var e struct{ Error string }
				getJSON(t, u, tt.status, &e)
				if !strings.Contains(e.Error, tt.wantErrSub) {
					t.Fatalf("error %q, want it to contain %q", e.Error, tt.wantErrSub)
				}
				return
			}
			var got latestResponse
			getJSON(t, u, tt.status, &got)
			if got.Scope != tt.wantScope || got.RequestsTotal != tt.wantTotal || got.Instances != tt.wantInst {
				t.Fatalf("got %+v, want scope %s total %d instances %d", got, tt.wantScope, tt.wantTotal, tt.wantInst)
			}
			if !got.Timestamp.Equal(now) {
				t.Fatalf("timestamp %s, want the newest %s", got.Timestamp, now)
			}
		})
	}
}

// TestAPIListNamesScopesWithRollupsOnly: an instance nobody follows has no
// 1 s snapshots but has rollups, and is listed.
func TestAPIListNamesScopesWithRollupsOnly(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Minute)
	srv, js := startAPI(t, now)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureRollupStream(ctx, js, StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	s := snap(0, 10, 0, 0, 0, 0)
	s.Time, s.Scope = now, proto.RegionScope("eu")
	publish(t, js, s)
	s.Scope = proto.InstanceScope("gw-eu-1")
	data, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, proto.RollupSubject(s.Scope), data); err != nil {
		t.Fatal(err)
	}
	var list struct{ Scopes []string }
	getJSON(t, srv.URL+"/api/metrics/list", http.StatusOK, &list)
	if got := strings.Join(list.Scopes, ","); got != "cluster,instance.gw-eu-1,region.eu" {
		t.Fatalf("scopes %s, want cluster,instance.gw-eu-1,region.eu", got)
	}
}
