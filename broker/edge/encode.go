package edge

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// Outgoing frames are built once, WebSocket header included, and then only
// read: the same bytes are written to every subscriber and may sit in any
// number of connection queues, so nothing may modify a frame once built.

// maxServerHeader is the longest unmasked frame header (64-bit length).
const maxServerHeader = 10

// frameHeaderLen is the header size of an unmasked frame with n payload bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// putFrameHeader writes the header of a final, unmasked frame of op with n
// payload bytes into dst, which must hold frameHeaderLen(n) bytes.
func putFrameHeader(dst []byte, op ws.OpCode, n int) {
	dst[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		dst[1] = byte(n)
	case n <= 0xffff:
		dst[1] = 126
		binary.BigEndian.PutUint16(dst[2:4], uint16(n))
	default:
		dst[1] = 127
		binary.BigEndian.PutUint64(dst[2:10], uint64(n))
	}
}

// buildFrame returns a new frame of op carrying payload.
func buildFrame(op ws.OpCode, payload []byte) []byte {
	h := frameHeaderLen(len(payload))
	f := make([]byte, h+len(payload))
	putFrameHeader(f, op, len(payload))
	copy(f[h:], payload)
	return f
}

// reserveHeader appends room for the longest header to dst; finishFrame
// then writes the real header right before the payload. This lets encoders
// append the payload in place and never copy it.
func reserveHeader(dst []byte) []byte {
	return append(dst, make([]byte, maxServerHeader)...)
}

// finishFrame completes a frame whose payload was appended to dst after
// reserveHeader at offset start, and returns the frame.
func finishFrame(dst []byte, start int, op ws.OpCode) []byte {
	n := len(dst) - start - maxServerHeader
	h := frameHeaderLen(n)
	at := start + maxServerHeader - h
	putFrameHeader(dst[at:], op, n)
	return dst[at:len(dst):len(dst)]
}

// encodeSnapshotFrame appends a Snapshot text frame of s restricted to set
// to dst and returns the frame (a subslice of the result's backing array)
// and the extended buffer.
func encodeSnapshotFrame(dst []byte, s *proto.Snapshot, set proto.MetricSet) (frame, buf []byte) {
	start := len(dst)
	dst = reserveHeader(dst)
	dst = proto.AppendSnapshotEvent(dst, s, set)
	return finishFrame(dst, start, ws.OpText), dst
}

// textFrame builds a text frame with payload produced by enc.
func textFrame(enc func([]byte) []byte) []byte {
	buf := reserveHeader(make([]byte, 0, 128))
	buf = enc(buf)
	return finishFrame(buf, 0, ws.OpText)
}

// errorFrame is an Error event frame.
func errorFrame(msg string) []byte {
	return textFrame(func(b []byte) []byte { return proto.AppendErrorEvent(b, msg) })
}

// closeFrame is a close frame with code and reason.
func closeFrame(code ws.StatusCode, reason string) []byte {
	return buildFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// Frames used as is. They are immutable after package initialisation.
var (
	frameCloseShutdown  = closeFrame(ws.StatusGoingAway, "server shutting down")
	frameCloseIdle      = closeFrame(ws.StatusGoingAway, "idle timeout")
	frameCloseSlow      = closeFrame(ws.StatusPolicyViolation, "slow consumer")
	frameCloseWriteTime = closeFrame(ws.StatusPolicyViolation, "write timeout")
	frameCloseEmpty     = buildFrame(ws.OpClose, nil)
	// frameCloseExpired ends a connection whose token expired (contract:
	// close code 4401, reason "token expired").
	frameCloseExpired = closeFrame(CloseTokenExpired, "token expired")
	framePing         = buildFrame(ws.OpPing, nil)
	framePongEmpty    = buildFrame(ws.OpPong, nil)
	frameErrBinary    = errorFrame("binary frames are not supported; send the subscription as a JSON text message")
)

// snapFrames is one snapshot with its frames, encoded lazily, at most once
// per distinct form (the metric set a Snapshot event carries): the first
// subscriber of a form at a tick pays for the encoding, every other one
// reuses the bytes.
type snapFrames struct {
	snap  proto.Snapshot
	forms atomic.Pointer[formTable] // nil until the first frame is built
	mu    sync.Mutex                // serialises building
	arena []byte                    // frames are carved out of it; never rewritten
}

// formTable holds a snapshot's frames by form. It is allocated with the
// first frame: the edge holds every scope's newest snapshot, and most
// scopes' snapshots are never sent to anyone. Clients use a handful of
// forms (the guide's six, perhaps with an extra or two, or a strict set),
// so the first inlineForms are found by a lock-free scan; the count is
// raised only after an entry is written, and entries are never changed
// after. Further forms — only clients naming many different strict sets
// make them — go to a map behind the mutex, so a lookup stays bounded
// whatever the number of forms.
type formTable struct {
	n      atomic.Int32
	inline [inlineForms]form
	more   map[proto.MetricSet][]byte // under snapFrames.mu
}

type form struct {
	set   proto.MetricSet
	frame []byte
}

const inlineForms = 8

func newSnapFrames(s proto.Snapshot) *snapFrames {
	return &snapFrames{snap: s}
}

// arenaSize holds a dozen or more encoded frames (at most ~320 B each with
// the guide's six metrics), so a snapshot costs one allocation for the
// handful of forms clients actually use.
const arenaSize = 4096

// frame returns the frame carrying set, building it on first use. An empty
// set means proto.GuideMetrics.
func (f *snapFrames) frame(set proto.MetricSet) []byte {
	set &= proto.AllMetrics
	if set == 0 {
		set = proto.GuideMetrics
	}
	if t := f.forms.Load(); t != nil {
		for i := range t.inline[:t.n.Load()] {
			if t.inline[i].set == set {
				return t.inline[i].frame
			}
		}
	}
	return f.build(set)
}

// build returns the frame of set from under the mutex, encoding it if no
// other caller did in the meantime.
func (f *snapFrames) build(set proto.MetricSet) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.forms.Load()
	if t == nil {
		t = new(formTable)
		f.forms.Store(t)
	}
	n := int(t.n.Load())
	for i := range t.inline[:n] {
		if t.inline[i].set == set {
			return t.inline[i].frame
		}
	}
	if b, ok := t.more[set]; ok {
		return b
	}
	if cap(f.arena)-len(f.arena) < 512 {
		f.arena = make([]byte, 0, arenaSize)
	}
	// Appending never rewrites bytes already handed out: frames are
	// subslices of earlier regions, and a reallocation copies them away
	// from the old array without touching it.
	var b []byte
	b, f.arena = encodeSnapshotFrame(f.arena, &f.snap, set)
	if n < inlineForms {
		t.inline[n] = form{set: set, frame: b}
		t.n.Store(int32(n + 1))
		return b
	}
	if t.more == nil {
		t.more = make(map[proto.MetricSet][]byte)
	}
	t.more[set] = b
	return b
}

// heartbeatCache holds the Heartbeat frame of the current second, shared by
// every connection whose heartbeat falls in it.
type heartbeatCache struct {
	mu  sync.Mutex
	cur atomic.Pointer[beatFrame]
}

type beatFrame struct {
	sec   int64
	frame []byte
}

func (h *heartbeatCache) frame(now time.Time) []byte {
	sec := now.Unix()
	if b := h.cur.Load(); b != nil && b.sec == sec {
		return b.frame
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.cur.Load(); b != nil && b.sec == sec {
		return b.frame
	}
	t := time.Unix(sec, 0)
	b := &beatFrame{sec: sec, frame: textFrame(func(d []byte) []byte { return proto.AppendHeartbeatEvent(d, t) })}
	h.cur.Store(b)
	return b.frame
}
