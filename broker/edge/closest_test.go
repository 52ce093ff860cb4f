//go:build linux

package edge

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// levenshtein is the textbook full-matrix distance, the reference for
// editDistance.
func levenshtein(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
		}
	}
	return d[len(a)][len(b)]
}

// FuzzEditDistance checks the bounded distance against the textbook one:
// exact within the limit, limit+1 beyond it.
func FuzzEditDistance(f *testing.F) {
	f.Add("instance.gw-01234", "instance.gw-0123x", 3)
	f.Add("", "region.eu", 0)
	f.Add("cluster", "cluster", 1)
	f.Fuzz(func(t *testing.T, a, b string, limit int) {
		if len(a) > 80 || len(b) > 80 || limit < 0 || limit > 200 {
			return
		}
		want := levenshtein(a, b)
		got := editDistance(a, b, limit, make([]int, len(b)+1))
		if want <= limit && got != want || want > limit && got != limit+1 {
			t.Fatalf("editDistance(%q, %q, %d) = %d, textbook %d", a, b, limit, got, want)
		}
	})
}

// referenceClosest ranks every scope by textbook distance, ties in known's
// order, and takes the first n.
func referenceClosest(known []proto.Scope, target string, n int) string {
	ranked := slices.Clone(known)
	slices.SortStableFunc(ranked, func(a, b proto.Scope) int {
		return levenshtein(a.String(), target) - levenshtein(b.String(), target)
	})
	return joinScopes(ranked[:min(n, len(ranked))])
}

func testScopes(instances int) []proto.Scope {
	known := []proto.Scope{proto.ClusterScope(), proto.RegionScope("eu")}
	for i := range instances {
		known = append(known, proto.InstanceScope(instanceName(i)))
	}
	return known
}

func TestClosestScopes(t *testing.T) {
	known := testScopes(1000)
	for _, target := range []string{"instance.gw-00123x", "region.ue", "cluster", "instance.x", "zzz", ""} {
		for _, n := range []int{1, 5, 20} {
			got, want := joinScopes(closestScopes(known, target, n)), referenceClosest(known, target, n)
			if got != want {
				t.Errorf("%d closest to %q:\n got %s\nwant %s", n, target, got, want)
			}
		}
	}
	if got := joinScopes(closestScopes(known, "instance.gw-00123x", 3)); got != "instance.gw-00123, instance.gw-00023, instance.gw-00103" {
		t.Errorf("closest to instance.gw-00123x: %s", got)
	}
}

// At 10 000 known scopes the unknown-scope error (Error event and 404
// body) names the 20 closest and says how many more there are and where
// to list them, instead of listing every scope.
func TestUnknownScopeErrorBounded(t *testing.T) {
	t.Parallel()
	js, start := startJS(t)
	now := time.Now().UTC().Truncate(time.Minute)
	const instances = 10_000
	known := testScopes(instances)
	rollups := make([]proto.Snapshot, 0, instances)
	for _, sc := range known[2:] {
		rollups = append(rollups, scoped(snap(now, 1), sc))
	}
	for chunk := range slices.Chunk(rollups, 1000) { // within PublishAsync's outstanding limit
		storeRollups(t, js, chunk...)
	}
	te := start(Config{})
	te.publishWait(snap(time.Now(), 1000))
	te.publishWait(scoped(snap(time.Now(), 400), regionEU))

	check := func(how, msg string, scope proto.Scope) {
		t.Helper()
		want := fmt.Sprintf("unknown scope %s: no snapshot of it was seen live or is kept in history; known scopes closest to it: %s and %d more; see GET /api/metrics/list",
			scope, referenceClosest(known, scope.String(), maxListedScopes), len(known)-maxListedScopes)
		if msg != want {
			t.Fatalf("%s: error (%d bytes)\n%.800q,\nwant\n%q", how, len(msg), msg, want)
		}
		if len(msg) > 1024 {
			t.Errorf("%s: error of %d bytes", how, len(msg))
		}
	}
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	c.sendText(`{"region":"eu-1234"}`)
	for {
		ev, raw := c.event(10 * time.Second)
		if ev.Type == proto.EventError {
			check("Error event", ev.Message, proto.RegionScope("eu-1234"))
			break
		}
		if ev.Type != proto.EventSnapshot {
			t.Fatalf("unexpected %v", raw)
		}
	}
	// An instance is first probed (the handshake waits up to probeWait).
	raw := rawDial(t, te.Addr().String())
	raw.sendRaw([]byte(upgradeRequest(wsPath + "?instance=gw-01234x")))
	_, body := raw.readHTTPResponse(http.StatusNotFound)
	check("404 body", strings.TrimSuffix(body, "\n"), proto.InstanceScope("gw-01234x"))
}
