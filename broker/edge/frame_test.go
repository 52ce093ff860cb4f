//go:build linux

package edge

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

func TestOversizedMessageCloses1009(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{MaxMessageBytes: 512})
	tests := []struct {
		name   string
		frames [][]byte
	}{
		{
			name:   "one frame",
			frames: [][]byte{rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true}, bytes.Repeat([]byte("x"), 513))},
		},
		{
			name: "fragments adding up",
			frames: [][]byte{
				rawFrame(ws.Header{OpCode: ws.OpText, Masked: true}, bytes.Repeat([]byte("x"), 300)),
				rawFrame(ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true}, bytes.Repeat([]byte("x"), 300)),
			},
		},
		{
			name: "announced length only",
			// 64-bit length of 1 TiB: refused on the header, nothing allocated.
			frames: [][]byte{{0x81, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}},
		},
		{
			name:   "binary",
			frames: [][]byte{rawFrame(ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true}, make([]byte, 600))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, te.url)
			for _, f := range tt.frames {
				c.sendRaw(f)
			}
			code, reason := c.expectClose(2 * time.Second)
			if code != ws.StatusMessageTooBig || !strings.Contains(reason, "512") {
				t.Errorf("close %d %q, want 1009 naming the limit", code, reason)
			}
			c.expectEOF(3 * time.Second)
		})
	}
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeOversized]); got != float64(len(tests)) {
		t.Errorf("oversized errors = %v, want %d", got, len(tests))
	}
}

func TestInvalidFramesClose1002(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	masked := func(fin bool, op ws.OpCode, p string) []byte {
		return rawFrame(ws.Header{Fin: fin, OpCode: op, Masked: true}, []byte(p))
	}
	tests := []struct {
		name  string
		bytes []byte
		code  ws.StatusCode
	}{
		{
			name:  "unmasked",
			bytes: rawFrame(ws.Header{Fin: true, OpCode: ws.OpText}, []byte(`{}`)),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "reserved bit",
			bytes: rawFrame(ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText, Masked: true}, []byte(`{}`)),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "reserved opcode",
			bytes: masked(true, ws.OpCode(0x3), "x"),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "control frame too long",
			bytes: masked(true, ws.OpPing, strings.Repeat("p", 126)),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "fragmented control frame",
			bytes: masked(false, ws.OpPing, "p"),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "continuation without a message",
			bytes: masked(true, ws.OpContinuation, "x"),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "new message inside a fragmented one",
			bytes: append(masked(false, ws.OpText, "{"), masked(true, ws.OpText, "}")...),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "64-bit length with the top bit set",
			bytes: []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
			code:  ws.StatusProtocolError,
		},
		{
			name:  "close with 1-byte payload",
			bytes: masked(true, ws.OpClose, "x"),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "close with reserved code",
			bytes: rawFrame(ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true}, ws.NewCloseFrameBody(1005, "")),
			code:  ws.StatusProtocolError,
		},
		{
			name:  "text not UTF-8",
			bytes: masked(true, ws.OpText, "{\"metrics\":\"\xff\"}"),
			code:  ws.StatusInvalidFramePayloadData,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, te.url)
			c.sendRaw(tt.bytes)
			code, _ := c.expectClose(2 * time.Second)
			if code != tt.code {
				t.Errorf("close code %d, want %d", code, tt.code)
			}
			c.expectEOF(3 * time.Second)
		})
	}
	wait.For(t, 10*time.Second, "all closed", func() bool { return te.Edge.reg.len() == 0 })
	if got := testutil.ToFloat64(te.m.errorsByType[errTypeProtocol]); got != float64(len(tests)) {
		t.Errorf("protocol errors = %v, want %d", got, len(tests))
	}
}

// A client stuck in the middle of a frame (slowloris) must not hold up
// anyone else: input is only ever consumed as far as it goes.
func TestPartialFrameDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))
	var stuck []*client
	for i := range 20 {
		c := dial(t, te.url)
		f := rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true}, []byte(`{"interval_seconds":2}`))
		c.sendRaw(f[:1+i%(len(f)-1)]) // a header or payload cut short
		stuck = append(stuck, c)
	}
	good := dial(t, te.url)
	good.expectEvent(proto.EventSnapshot, 2*time.Second)
	good.sendFrame(ws.OpPing, []byte("x"))
	h, _, err := good.frame(time.Second)
	if err != nil || h.OpCode != ws.OpPong {
		t.Fatalf("got %v %v, want a prompt pong", h.OpCode, err)
	}
	good.expectEvent(proto.EventSnapshot, 2*time.Second)
	// The stuck clients are still served on their cadence.
	for _, c := range stuck {
		c.expectEvent(proto.EventSnapshot, 2*time.Second)
	}
}

// Random garbage from many clients at once: the edge answers each (close or
// nothing), and a well-behaved client keeps its cadence throughout.
func TestGarbageClientsDoNotDisturbOthers(t *testing.T) {
	t.Parallel()
	te := startEdge(t, Config{})
	te.publishWait(snap(time.Now(), 1))
	good := dial(t, te.url)
	good.expectEvent(proto.EventSnapshot, 2*time.Second)

	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			garbage := make([]byte, 1+rng.IntN(3000))
			for j := range garbage {
				garbage[j] = byte(rng.UintN(256))
			}
			var conn net.Conn
			if i%2 == 0 {
				// Garbage after a valid handshake.
				c, _, _, err := ws.Dial(t.Context(), te.url)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				conn = c
			} else {
				// Garbage instead of an HTTP request.
				c, err := net.Dial("tcp", te.Addr().String())
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				conn = c
			}
			defer conn.Close()
			_, _ = conn.Write(garbage)
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 4096)
			for {
				if _, err := conn.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	start := time.Now()
	for range 2 {
		good.expectEvent(proto.EventSnapshot, 1500*time.Millisecond)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("2 snapshots took %s while under garbage", d)
	}
	wg.Wait()
}

// recordSink records what the parser hands on, for FuzzFrames.
type recordSink struct {
	events []string
	closed bool
}

func (s *recordSink) onFrame(op ws.OpCode, p []byte) error {
	s.events = append(s.events, fmt.Sprintf("%d:%q", op, p))
	if op == ws.OpClose {
		s.closed = true
		return errDone
	}
	return nil
}

// feedAll feeds data in chunks of the given sizes (cycled) and returns the
// events and the error that ended parsing.
func feedAll(data []byte, chunks []int, maxMsg int, check func(*inputState)) ([]string, error) {
	var st inputState
	var ps parseScratch
	sink := &recordSink{}
	data = bytes.Clone(data) // unmasking works in place
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(chunks) > 0 {
			n = min(max(chunks[i%len(chunks)], 1), len(data))
		}
		if err := st.feed(&ps, data[:n], maxMsg, sink); err != nil {
			return sink.events, err
		}
		data = data[n:]
		check(&st)
	}
	return sink.events, nil
}

// FuzzFrames feeds arbitrary bytes, split arbitrarily, into a connection's
// input path. It must never panic or loop, must keep its buffers bounded by
// the message limit, and must see the same frames however the bytes are
// split across reads.
func FuzzFrames(f *testing.F) {
	text := rawFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true}, []byte(`{"interval_seconds":2}`))
	frag := append(rawFrame(ws.Header{OpCode: ws.OpText, Masked: true}, []byte(`{"a"`)),
		rawFrame(ws.Header{Fin: true, OpCode: ws.OpContinuation, Masked: true}, []byte(`:1}`))...)
	ping := rawFrame(ws.Header{Fin: true, OpCode: ws.OpPing, Masked: true}, []byte("hi"))
	closeF := rawFrame(ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true}, ws.NewCloseFrameBody(1000, ""))
	long := binary.BigEndian.AppendUint64([]byte{0x81, 0xff}, 1<<40)
	for _, seed := range [][]byte{text, frag, ping, closeF, long, append(append(text, ping...), frag...), {0x81}, {}} {
		f.Add(seed, uint8(1), uint8(7))
		f.Add(seed, uint8(0), uint8(0))
	}
	const maxMsg = 256
	f.Fuzz(func(t *testing.T, data []byte, c1, c2 uint8) {
		bound := func(st *inputState) {
			if len(st.buf) > maxMsg+ws.MaxHeaderSize || len(st.msg) > maxMsg {
				t.Fatalf("buffers grew past the limit: buf %d msg %d", len(st.buf), len(st.msg))
			}
		}
		whole, errWhole := feedAll(data, nil, maxMsg, bound)
		split, errSplit := feedAll(data, []int{int(c1), int(c2)}, maxMsg, bound)
		if fmt.Sprint(whole) != fmt.Sprint(split) || (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("split input parsed differently:\nwhole %v %v\nsplit %v %v", whole, errWhole, split, errSplit)
		}
	})
}

func TestFrameEncodingMatchesGobwas(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte("a"), n)
		var want bytes.Buffer
		if err := ws.WriteFrame(&want, ws.NewTextFrame(payload)); err != nil {
			t.Fatal(err)
		}
		if got := buildFrame(ws.OpText, payload); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("n=%d: buildFrame differs from ws.WriteFrame", n)
		}
		frame := finishFrame(append(reserveHeader(nil), payload...), 0, ws.OpText)
		if !bytes.Equal(frame, want.Bytes()) {
			t.Errorf("n=%d: finishFrame differs from ws.WriteFrame", n)
		}
		// And a gobwas client reads it back.
		got, err := wsutil.ReadServerText(&rwBuf{Reader: bytes.NewReader(want.Bytes())})
		if err != nil || len(got) != n {
			t.Errorf("n=%d: read back %d bytes, %v", n, len(got), err)
		}
	}
}

type rwBuf struct {
	*bytes.Reader
	bytes.Buffer
}

func (b *rwBuf) Read(p []byte) (int, error)  { return b.Reader.Read(p) }
func (b *rwBuf) Write(p []byte) (int, error) { return b.Buffer.Write(p) }
