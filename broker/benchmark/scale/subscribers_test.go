package scale

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// TestSubscribersTallyWhatTheyReceive runs a subscriber against a WebSocket
// server that plays a script over a real socket: a repeated second is
// counted as a repeat, a second or a total going backwards as a fault, an
// Error event as such, a connection that ends early as lost, and only the
// window's deliveries count towards delivered and delays.
func TestSubscribersTallyWhatTheyReceive(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	snap := func(sec int, total int) string {
		return fmt.Sprintf(`{"type":"Snapshot","timestamp":%q,"requests_total":%d}`, now.Add(time.Duration(sec)*time.Second).Format(time.RFC3339), total)
	}
	script := []string{
		snap(0, 10), // on connect: the phase, not tallied
		snap(1, 20),
		snap(1, 20), // repeat
		snap(0, 20), // backwards second
		snap(2, 15), // backwards total
		`{"type":"Error","message":"data stale since …"}`,
		snap(3, 30),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("region") != "eu" {
			http.Error(w, "unknown scope", http.StatusNotFound)
			return
		}
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		for _, m := range script {
			if err := wsutil.WriteServerText(conn, []byte(m)); err != nil {
				return
			}
		}
		// Ends the connection without a close frame, as a crash would.
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newSubscribers(ctx, strings.TrimPrefix(srv.URL, "http://"), 100*time.Millisecond,
		[]followed{{Scope: proto.RegionScope("eu"), query: "region=eu"}, {Scope: proto.RegionScope("mars"), query: "region=mars"}})
	s.attempts = 2
	s.setWindow(now.Add(-time.Hour), now.Add(time.Hour))
	s.connect(2)
	wait.For(t, 10*time.Second, "the connection to end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.st.lost == 1
	})
	s.close()
	rep := s.report(2, 10)
	if rep.Connected != 1 || rep.DialFailures != 1 || !strings.Contains(rep.FirstDialError, "404") {
		t.Fatalf("connected %d, failed %d (%q); want the region.mars subscriber refused", rep.Connected, rep.DialFailures, rep.FirstDialError)
	}
	if rep.Due != 10 || rep.Delivered != 5 || rep.Repeats != 1 || rep.Delay.N != 5 || rep.ErrorEvents != 1 || rep.ErrorEventsAfter != 0 {
		t.Fatalf("tally %+v; want 5 of 10 delivered, 1 repeat, 1 Error event", rep)
	}
	faults := strings.Join(rep.Faults, "\n")
	if len(rep.Faults) != 3 || !strings.Contains(faults, "second") || !strings.Contains(faults, "requests_total 15 after 20") ||
		!strings.Contains(faults, "connection ended") {
		t.Fatalf("faults:\n%s", faults)
	}
	if rep.Phase.N != 1 || rep.Phase.P50 < 100 || rep.Phase.P50 > 100+float64(phaseSlack.Milliseconds()) {
		t.Fatalf("phase %+v, want one connection at 100 ms into its second", rep.Phase)
	}
	var bad []string
	rep.check(func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) })
	if got := strings.Join(bad, "\n"); !strings.Contains(got, "1 connections lost") || !strings.Contains(got, "1 failed of 2") {
		t.Fatalf("the self-check says:\n%s", got)
	}
}
