package benchmark

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// serverFrame builds an unmasked frame as a server sends it.
func serverFrame(op ws.OpCode, payload []byte) []byte {
	w := &byteWriter{}
	_ = ws.WriteHeader(w, ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))})
	return append(w.b, payload...)
}

type seen struct {
	op      ws.OpCode
	payload string
}

func collect(data []byte) ([]seen, int, error) {
	var got []seen
	n, err := parseFrames(data, func(op ws.OpCode, p []byte) bool {
		got = append(got, seen{op, string(p)})
		return true
	})
	return got, n, err
}

func TestParseFrames(t *testing.T) {
	small := serverFrame(ws.OpText, []byte(`{"type":"Heartbeat"}`))
	medium := serverFrame(ws.OpText, bytes.Repeat([]byte("m"), 300))    // 16-bit length
	large := serverFrame(ws.OpBinary, bytes.Repeat([]byte("l"), 70000)) // 64-bit length
	ping := serverFrame(ws.OpPing, []byte("p"))
	stream := bytes.Join([][]byte{small, medium, large, ping}, nil)

	// Every split point: the frames before it are handled, the rest is
	// left for the next call and then completes.
	for cut := 0; cut <= len(stream); cut += 97 {
		first, n, err := collect(stream[:cut])
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		rest, m, err := collect(stream[n:])
		if err != nil || n+m != len(stream) {
			t.Fatalf("cut %d: consumed %d+%d of %d, %v", cut, n, m, len(stream), err)
		}
		all := append(first, rest...)
		if len(all) != 4 || all[0].payload != `{"type":"Heartbeat"}` || len(all[1].payload) != 300 ||
			len(all[2].payload) != 70000 || all[3].op != ws.OpPing {
			t.Fatalf("cut %d: got %d frames", cut, len(all))
		}
	}

	// fn returning false stops after that frame.
	var calls int
	n, err := parseFrames(stream, func(ws.OpCode, []byte) bool { calls++; return false })
	if err != nil || calls != 1 || n != len(small) {
		t.Errorf("stop after the first frame: %d calls, %d bytes, %v", calls, n, err)
	}
}

func TestParseFramesRejects(t *testing.T) {
	masked := clientFrame(ws.OpText, []byte("hi"), [4]byte{1, 2, 3, 4})
	fragment := serverFrame(ws.OpText, []byte("part"))
	fragment[0] &^= 0x80
	rsv := serverFrame(ws.OpText, []byte("x"))
	rsv[0] |= 0x40
	reserved := serverFrame(ws.OpText, []byte("x"))
	reserved[0] = 0x80 | 0x3
	bigPing := serverFrame(ws.OpPing, bytes.Repeat([]byte("p"), 126))
	huge := []byte{0x81, 127, 0, 0, 0, 1, 0, 0, 0, 0}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"masked", masked, "masked"},
		{"fragmented", fragment, "fragmented"},
		{"reserved bits", rsv, "reserved bits"},
		{"reserved opcode", reserved, "opcode"},
		{"control frame too long", bigPing, "ping frame of 126"},
		{"frame too large", huge, "exceeds"},
	}
	for _, tt := range tests {
		// A valid frame first: it is handled and counted before the error.
		data := append(serverFrame(ws.OpText, []byte("ok")), tt.data...)
		got, n, err := collect(data)
		if !errors.Is(err, errBadFrame) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want errBadFrame mentioning %q", tt.name, err, tt.want)
		}
		if len(got) != 1 || n != 4 {
			t.Errorf("%s: %d frames, %d bytes before the error, want 1 and 4", tt.name, len(got), n)
		}
	}
}

func TestEventFields(t *testing.T) {
	s := stubSnapshot(time.Date(2025, 6, 1, 12, 0, 7, 0, time.UTC), 3)
	edgeEvent := proto.AppendSnapshotEvent(nil, &s, proto.GuideMetrics)
	tests := []struct {
		payload string
		kind    eventKind
		ts      string
	}{
		{string(edgeEvent), kindSnapshot, "2025-06-01T12:00:07Z"},
		{`{"type":"Heartbeat","timestamp":"2025-06-01T12:00:08Z"}`, kindHeartbeat, "2025-06-01T12:00:08Z"},
		{`{"type":"Error","message":"bad"}`, kindError, ""},
		{`{"type":"TimeSeries","metric_name":"x","data_points":[]}`, kindOther, ""},
		{`{"timestamp":"2025-06-01T12:00:09Z","type":"Snapshot"}`, kindSnapshot, "2025-06-01T12:00:09Z"},
		{`{"type":"Snapshots"}`, kindOther, ""},
		{`{"timestamp":"unterminated`, kindOther, ""},
		{``, kindOther, ""},
	}
	for _, tt := range tests {
		if got := eventKindOf([]byte(tt.payload)); got != tt.kind {
			t.Errorf("eventKindOf(%s) = %d, want %d", tt.payload, got, tt.kind)
		}
		ts, ok := eventTimestamp([]byte(tt.payload))
		if string(ts) != tt.ts || ok != (tt.ts != "") {
			t.Errorf("eventTimestamp(%s) = %q, %v; want %q", tt.payload, ts, ok, tt.ts)
		}
	}
}

func TestClientFrameIsMaskedAndReadable(t *testing.T) {
	payload := []byte(`{"metrics":[],"interval_seconds":7,"include_history":false}`)
	f := clientFrame(ws.OpText, payload, [4]byte{9, 8, 7, 6})
	h, err := ws.ReadHeader(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	body := append([]byte(nil), f[len(f)-int(h.Length):]...)
	ws.Cipher(body, h.Mask, 0)
	if !h.Masked || !h.Fin || h.OpCode != ws.OpText || !bytes.Equal(body, payload) {
		t.Fatalf("header %+v, body %q", h, body)
	}
	sub, err := proto.ParseSubscription(body)
	if err != nil || sub.IntervalSeconds != 7 || sub.Metrics != proto.GuideMetrics {
		t.Errorf("subscription %+v, %v", sub, err)
	}
}

// FuzzParseFrames: the client's decoder never panics, never claims more
// bytes than it was given, hands out payloads inside the input, and parses
// the same way however the input is split.
func FuzzParseFrames(f *testing.F) {
	s := stubSnapshot(time.Unix(1700000000, 0), 1)
	f.Add(serverFrame(ws.OpText, proto.AppendSnapshotEvent(nil, &s, proto.AllMetrics)), 3)
	f.Add(append(serverFrame(ws.OpPing, nil), serverFrame(ws.OpClose, ws.NewCloseFrameBody(1001, "bye"))...), 1)
	f.Add(serverFrame(ws.OpText, bytes.Repeat([]byte("x"), 200)), 2)
	f.Add([]byte{0x81, 127, 0xff, 0, 0, 0, 0, 0, 0, 1}, 5)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		whole, n, err := collect(data)
		if n < 0 || n > len(data) {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
		for _, s := range whole {
			_ = eventKindOf([]byte(s.payload))
			_, _ = eventTimestamp([]byte(s.payload))
		}
		if err != nil || len(data) == 0 {
			return
		}
		cut = min(max(cut, 0), len(data))
		first, n1, err1 := collect(data[:cut])
		if err1 != nil {
			t.Fatalf("prefix fails (%v) where the whole does not", err1)
		}
		rest, n2, err2 := collect(data[n1:])
		if err2 != nil || n1+n2 != n {
			t.Fatalf("split at %d: %d+%d bytes (%v), whole %d", cut, n1, n2, err2, n)
		}
		if fmt.Sprint(append(first, rest...)) != fmt.Sprint(whole) {
			t.Fatalf("split at %d parses differently", cut)
		}
	})
}
