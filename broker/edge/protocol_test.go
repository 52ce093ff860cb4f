//go:build linux

package edge

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

const allKeys = "type,timestamp,requests_total,requests_success,requests_error,active_connections,avg_response_time,success_rate"

func TestFirstSnapshotExactlyOnce(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	s := snap(time.Now(), 1000)
	te.publishWait(s)

	c := dial(t, te.url)
	start := time.Now()
	ev, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got := keys(raw); got != allKeys {
		t.Errorf("first snapshot fields = %s, want %s", got, allKeys)
	}
	if !ev.Timestamp.Equal(s.Time) || ev.Values["requests_total"] != 1000 {
		t.Errorf("first snapshot = %+v, want time %v and requests_total 1000", ev, s.Time)
	}
	if ts := string(raw["timestamp"]); !strings.HasSuffix(ts, `Z"`) {
		t.Errorf("timestamp %s is not UTC with Z", ts)
	}
	// The reference implementation sends a second snapshot right away.
	c.expectSilence(700 * time.Millisecond)
	c.expectEvent(proto.EventSnapshot, time.Second)
	if gap := time.Since(start); gap < 850*time.Millisecond || gap > 1500*time.Millisecond {
		t.Errorf("second snapshot after %s, want about 1s", gap)
	}
}

func TestFirstSnapshotWaitsForData(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	c := dial(t, te.url)
	c.expectSilence(300 * time.Millisecond)

	s := snap(time.Now(), 7)
	te.publish(s)
	start := time.Now()
	ev, _ := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if ev.Values["requests_total"] != 7 {
		t.Errorf("snapshot = %+v, want requests_total 7", ev)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("first snapshot %s after it existed, want promptly", d)
	}
	c.expectSilence(700 * time.Millisecond)
	c.expectEvent(proto.EventSnapshot, time.Second)
}

func TestSubscribeOnOpenKeepsCadence(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))

	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	t0 := time.Now()
	// What the guide's JavaScript client does on open.
	c.sendText(`{"metrics":["requests_total","active_connections"],"interval_seconds":2,"include_history":false}`)
	c.expectSilence(1600 * time.Millisecond)
	_, raw := c.expectEvent(proto.EventSnapshot, time.Second)
	if gap := time.Since(t0); gap < 1800*time.Millisecond || gap > 2500*time.Millisecond {
		t.Errorf("next snapshot after %s, want at t0+2s", gap)
	}
	// It reads success_rate and avg_response_time from every snapshot.
	if got := keys(raw); got != allKeys {
		t.Errorf("snapshot fields = %s, want %s", got, allKeys)
	}
}

func TestSubscriptionDueInPastSendsAtOnce(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))

	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	c.sendText(`{"interval_seconds":5}`)
	c.expectSilence(1500 * time.Millisecond)
	// last sent + 1 s is in the past: the next snapshot is due at once.
	c.sendText(`{"interval_seconds":1}`)
	start := time.Now()
	c.expectEvent(proto.EventSnapshot, time.Second)
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("snapshot %s after the subscription, want at once", d)
	}
	c.expectSilence(700 * time.Millisecond)
	c.expectEvent(proto.EventSnapshot, time.Second)
}

// Every Snapshot carries the guide's six fields whatever metrics names;
// strict_metrics (a Meridian extension) asks for exactly the named ones.
func TestSnapshotFieldsBySubscription(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 100))

	tests := []struct {
		name string
		sub  string
		want string
	}{
		{
			name: "the guide's JavaScript example",
			sub:  `{"metrics":["requests_total","active_connections"],"interval_seconds":1,"include_history":false}`,
			want: allKeys,
		},
		{
			name: "the guide's Rust example, with the alias",
			sub:  `{"metrics":["requests_total","response_time_avg"],"interval_seconds":1,"include_history":false}`,
			want: allKeys,
		},
		{
			name: "empty list",
			sub:  `{"metrics":[],"interval_seconds":1,"include_history":false}`,
			want: allKeys,
		},
		{
			name: "null",
			sub:  `{"metrics":null}`,
			want: allKeys,
		},
		{
			name: "strict_metrics false",
			sub:  `{"metrics":["success_rate"],"strict_metrics":false}`,
			want: allKeys,
		},
		{
			name: "strict: the alias selects avg_response_time",
			sub:  `{"metrics":["requests_total","response_time_avg"],"strict_metrics":true}`,
			want: "type,timestamp,requests_total,avg_response_time",
		},
		{
			name: "strict: wire order, duplicates collapse",
			sub:  `{"metrics":["success_rate","requests_error","success_rate"],"strict_metrics":true}`,
			want: "type,timestamp,requests_error,success_rate",
		},
		{
			name: "strict with an empty list: the guide's six",
			sub:  `{"metrics":[],"strict_metrics":true}`,
			want: allKeys,
		},
	}
	// One connection per case, all waiting for their next ticks at once;
	// three snapshots each, so that no form holds for the first one only.
	clients := make([]*client, len(tests))
	for i, tt := range tests {
		clients[i] = dial(t, te.url)
		clients[i].expectEvent(proto.EventSnapshot, 2*time.Second)
		clients[i].sendText(tt.sub)
	}
	for round := range 3 {
		if round > 0 {
			te.publishWait(snap(time.Now(), uint64(100+round)))
		}
		for i, tt := range tests {
			_, raw := clients[i].expectEvent(proto.EventSnapshot, 3*time.Second)
			if got := keys(raw); got != tt.want {
				t.Errorf("%s, snapshot %d: fields = %s, want %s", tt.name, round+1, got, tt.want)
			}
		}
	}
}

func TestBadInputKeepsConnectionAndSubscription(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 100))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	// strict_metrics makes the subscription in force visible in each snapshot.
	c.sendText(`{"metrics":["requests_total"],"interval_seconds":1,"strict_metrics":true}`)

	tests := []struct {
		name string
		op   ws.OpCode
		msg  string
		want string // substring of the Error message
	}{
		{
			name: "malformed JSON",
			op:   ws.OpText,
			msg:  `{"metrics":`,
			want: "must be a JSON object",
		},
		{
			name: "not an object",
			op:   ws.OpText,
			msg:  `[1,2]`,
			want: "must be a JSON object",
		},
		{
			name: "metrics wrong type",
			op:   ws.OpText,
			msg:  `{"metrics":"requests_total"}`,
			want: "metrics must be an array",
		},
		{
			name: "interval zero",
			op:   ws.OpText,
			msg:  `{"interval_seconds":0}`,
			want: "interval_seconds must be an integer from 1 to 60, got 0",
		},
		{
			name: "interval too large",
			op:   ws.OpText,
			msg:  `{"interval_seconds":61}`,
			want: "got 61",
		},
		{
			name: "interval not integer",
			op:   ws.OpText,
			msg:  `{"interval_seconds":"2"}`,
			want: "interval_seconds must be an integer",
		},
		{
			name: "unknown metric",
			op:   ws.OpText,
			msg:  `{"metrics":["requests_total","latency_p99"]}`,
			want: `unknown metric "latency_p99"; valid names: requests_total`,
		},
		{
			name: "include_history wrong type",
			op:   ws.OpText,
			msg:  `{"include_history":"yes"}`,
			want: "include_history must be true or false",
		},
		{
			name: "strict_metrics wrong type",
			op:   ws.OpText,
			msg:  `{"strict_metrics":"yes"}`,
			want: "strict_metrics must be true or false",
		},
		{
			name: "binary frame",
			op:   ws.OpBinary,
			msg:  `{"interval_seconds":2}`,
			want: "binary frames are not supported; send the subscription as a JSON text message",
		},
	}
	for _, tt := range tests {
		c.sendFrame(tt.op, []byte(tt.msg))
		for {
			ev, raw := c.event(2 * time.Second)
			if ev.Type == proto.EventSnapshot {
				continue // the cadence goes on meanwhile
			}
			if ev.Type != proto.EventError || !strings.Contains(ev.Message, tt.want) {
				t.Errorf("%s: got %v, want an Error containing %q", tt.name, raw, tt.want)
			}
			break
		}
	}
	// Still open, still the last valid subscription: requests_total every second.
	_, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got, want := keys(raw), "type,timestamp,requests_total"; got != want {
		t.Errorf("after bad input: fields = %s, want %s", got, want)
	}
	m := te.m
	if got := testutil.ToFloat64(m.errorsByType[errTypeBadSubscription]); got != 9 {
		t.Errorf("bad_subscription errors = %v, want 9", got)
	}
	if got := testutil.ToFloat64(m.errorsByType[errTypeBinary]); got != 1 {
		t.Errorf("binary errors = %v, want 1", got)
	}
}

func TestPingAnsweredWithPong(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	c := dial(t, te.url)
	c.sendFrame(ws.OpPing, []byte("are you there"))
	h, p, err := c.frame(2 * time.Second)
	if err != nil || h.OpCode != ws.OpPong || !bytes.Equal(p, []byte("are you there")) {
		t.Fatalf("got %v %q %v, want pong with the ping's payload", h.OpCode, p, err)
	}
	c.sendFrame(ws.OpPing, nil)
	h, p, err = c.frame(2 * time.Second)
	if err != nil || h.OpCode != ws.OpPong || len(p) != 0 {
		t.Fatalf("got %v %q %v, want empty pong", h.OpCode, p, err)
	}
}

func TestClientCloseIsEchoed(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	c := dial(t, te.url)
	wait.For(t, 10*time.Second, "registered", func() bool { return te.Edge.reg.len() == 1 })
	c.sendFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
	code, _ := c.expectClose(2 * time.Second)
	if code != ws.StatusNormalClosure {
		t.Errorf("echoed close code %d, want 1000", code)
	}
	c.expectEOF(2 * time.Second)
	wait.For(t, 10*time.Second, "unregistered", func() bool { return te.Edge.reg.len() == 0 })
	if got := testutil.ToFloat64(te.m.closedByReason[reasonClientClose]); got != 1 {
		t.Errorf("closed{client_close} = %v, want 1", got)
	}
}

func TestFragmentedSubscription(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 5))
	c := dial(t, te.url)
	c.expectEvent(proto.EventSnapshot, 2*time.Second)
	msg := []byte(`{"metrics":["requests_error"],"interval_seconds":1,"strict_metrics":true}`)
	// Three fragments with a ping in between, as RFC 6455 allows.
	c.sendRaw(rawFrame(ws.Header{OpCode: ws.OpText, Masked: true}, msg[:10]))
	c.sendRaw(rawFrame(ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true}, []byte("p")))
	c.sendRaw(rawFrame(ws.Header{OpCode: ws.OpContinuation, Masked: true}, msg[10:20]))
	c.sendRaw(rawFrame(ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true}, msg[20:]))
	h, p, err := c.frame(2 * time.Second)
	if err != nil || h.OpCode != ws.OpPong || string(p) != "p" {
		t.Fatalf("got %v %q %v, want pong", h.OpCode, p, err)
	}
	_, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got, want := keys(raw), "type,timestamp,requests_error"; got != want {
		t.Errorf("fields = %s, want %s", got, want)
	}
}

func TestPipelinedSubscriptionWithHandshake(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 5))
	// A client that sends its subscription in the same packet as the
	// upgrade request: the edge must not lose the bytes it read ahead.
	req := upgradeRequest("/ws/metrics?x=1")
	sub := rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true}, []byte(`{"metrics":["requests_total"],"strict_metrics":true}`))
	c := rawDial(t, te.Addr().String())
	c.sendRaw(append([]byte(req), sub...))
	c.readHTTPResponse(101)
	_, raw := c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if keys(raw) != allKeys {
		t.Errorf("first snapshot fields = %s, want all", keys(raw))
	}
	_, raw = c.expectEvent(proto.EventSnapshot, 2*time.Second)
	if got, want := keys(raw), "type,timestamp,requests_total"; got != want {
		t.Errorf("fields = %s, want %s", got, want)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestSessionGolden records one client's session (every frame, in order)
// and compares it byte for byte with testdata/session.golden: the wire
// format of each event kind, the metric filter, the history series and the
// Error text. Regenerate with -update after an intended change.
func TestSessionGolden(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{HistoryPoints: 4, HistoryWindow: time.Minute})
	at := time.Date(2024, 11, 7, 10, 30, 0, 0, time.UTC)
	for i := range 60 {
		s := snap(at.Add(time.Duration(i-60)*time.Second), uint64(1000+i*25))
		s.ActiveConnections = int64(10 + i%5)
		s.AvgResponseTimeMs = 40 + float64(i%7)/3
		te.hist.add(s)
	}
	last := snap(at, 2500)
	last.AvgResponseTimeMs = 45.2
	te.publishWait(last)

	c := dial(t, te.url)
	var transcript bytes.Buffer
	record := func(n int) {
		for range n {
			h, p, err := c.frame(3 * time.Second)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if h.OpCode == ws.OpText {
				fmt.Fprintf(&transcript, "text fin=%v %s\n", h.Fin, p)
			} else {
				fmt.Fprintf(&transcript, "op=%d fin=%v %q\n", h.OpCode, h.Fin, p)
			}
		}
	}
	record(1)
	c.sendText(`{"metrics":["requests_total","response_time_avg"],"interval_seconds":61}`)
	record(1)
	c.sendText(`{"metrics":["requests_total","response_time_avg"],"include_history":true,"history_seconds":60,"interval_seconds":2}`)
	record(3) // two TimeSeries (prepared by a history worker), then the next snapshot, 2 s after the first
	c.sendFrame(ws.OpPing, []byte("golden"))
	record(1)
	c.sendFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	record(1)

	path := filepath.Join("testdata", "session.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, transcript.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(transcript.Bytes(), want) {
		t.Errorf("session differs from %s:\ngot:\n%s\nwant:\n%s", path, transcript.Bytes(), want)
	}
}
