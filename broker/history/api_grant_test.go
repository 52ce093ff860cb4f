package history

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/proto"
)

// withToken serves api as an edge does: the request's grant in its context.
func withToken(t *testing.T, api http.Handler, scopes []string) *httptest.Server {
	t.Helper()
	secret := []byte(strings.Repeat("q", 32))
	v, err := auth.NewVerifier(context.Background(), auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	tok, err := auth.MintHMAC(secret, auth.MintOptions{TTL: time.Hour, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	g, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(w, r.WithContext(auth.WithGrant(r.Context(), g)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAPIGrantAndPagination(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	srv, js := startAPI(t, now)
	for _, sc := range []proto.Scope{proto.ClusterScope(), proto.RegionScope("eu"), proto.RegionScope("us"),
		proto.InstanceScope("gw-eu-1"), proto.InstanceScope("gw-us-1")} {
		s := snap(0, 10, 1, 0, 200, 10)
		s.Time, s.Scope = now, sc
		publish(t, js, s)
	}
	var list struct {
		Scopes    []string
		NextAfter string `json:"next_after"`
	}
	// Pages of two, in the list's order: cluster, then the rest sorted.
	var all []string
	after := ""
	for range 5 {
		list.NextAfter = ""
		getJSON(t, srv.URL+"/api/metrics/list?limit=2&after="+after, http.StatusOK, &list)
		all = append(all, list.Scopes...)
		if list.NextAfter == "" {
			break
		}
		after = list.NextAfter
	}
	if got := strings.Join(all, ","); got != "cluster,instance.gw-eu-1,instance.gw-us-1,region.eu,region.us" {
		t.Fatalf("paged scopes %s", got)
	}
	var bad map[string]string
	getJSON(t, srv.URL+"/api/metrics/list?limit=1001", http.StatusBadRequest, &bad)

	api, err := NewAPI(APIConfig{JetStream: js, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	eu := withToken(t, api, []string{"region.eu", "instance.gw-eu-1"})
	getJSON(t, eu.URL+"/api/metrics/list", http.StatusOK, &list)
	if got := strings.Join(list.Scopes, ","); got != "instance.gw-eu-1,region.eu" {
		t.Fatalf("a region.eu token lists %s", got)
	}
	var ok, denied map[string]any
	getJSON(t, eu.URL+"/api/metrics/history?metric=requests_total&region=eu", http.StatusOK, &ok)
	getJSON(t, eu.URL+"/api/metrics/history?metric=requests_total&region=us", http.StatusForbidden, &denied)
	if !strings.Contains(denied["error"].(string), "scope region.us is outside this token's scopes") {
		t.Fatalf("403 body %v", denied)
	}
	getJSON(t, eu.URL+"/api/metrics/history?metric=requests_total", http.StatusForbidden, &denied)
}
