package benchmark

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gobwas/ws"
)

// The client's wire decoding: server frames (never masked, never
// fragmented by these servers) and the two fields of a Kairos event it
// needs, found without decoding the JSON.

// maxServerFrame bounds a server frame the client accepts.
const maxServerFrame = 1 << 20

// errBadFrame is a server frame the client cannot accept.
var errBadFrame = errors.New("bad server frame")

// parseFrames calls fn with every complete frame at the start of data and
// returns how many bytes those took; an incomplete frame is left for the
// next call, with more data behind it. fn returns false to stop early.
// payload aliases data and is valid only during the call.
func parseFrames(data []byte, fn func(op ws.OpCode, payload []byte) bool) (int, error) {
	used := 0
	for {
		b := data[used:]
		if len(b) < 2 {
			return used, nil
		}
		if b[0]&0x70 != 0 {
			return used, fmt.Errorf("reserved bits %#x: %w", b[0]&0x70, errBadFrame)
		}
		if b[1]&0x80 != 0 {
			return used, fmt.Errorf("masked frame from the server: %w", errBadFrame)
		}
		fin, op := b[0]&0x80 != 0, ws.OpCode(b[0]&0x0f)
		n, hdr := uint64(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return used, nil
			}
			n, hdr = uint64(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			if len(b) < 10 {
				return used, nil
			}
			n, hdr = binary.BigEndian.Uint64(b[2:10]), 10
		}
		switch {
		case !fin:
			return used, fmt.Errorf("fragmented %s frame: %w", opName(op), errBadFrame)
		case op.IsReserved() || op == ws.OpContinuation:
			return used, fmt.Errorf("opcode %#x: %w", byte(op), errBadFrame)
		case op.IsControl() && n > 125:
			return used, fmt.Errorf("%s frame of %d bytes: %w", opName(op), n, errBadFrame)
		case n > maxServerFrame:
			return used, fmt.Errorf("frame of %d bytes exceeds %d: %w", n, maxServerFrame, errBadFrame)
		}
		if uint64(len(b)-hdr) < n {
			return used, nil
		}
		end := hdr + int(n)
		used += end
		if !fn(op, b[hdr:end]) {
			return used, nil
		}
	}
}

// opName names an opcode for messages.
func opName(op ws.OpCode) string {
	switch op {
	case ws.OpContinuation:
		return "continuation"
	case ws.OpText:
		return "text"
	case ws.OpBinary:
		return "binary"
	case ws.OpClose:
		return "close"
	case ws.OpPing:
		return "ping"
	case ws.OpPong:
		return "pong"
	}
	return fmt.Sprintf("opcode %#x", byte(op))
}

// eventKind is the type of a Kairos event, as far as the client cares.
type eventKind uint8

const (
	kindOther eventKind = iota
	kindSnapshot
	kindHeartbeat
	kindError
)

var (
	typeField      = []byte(`"type":"`)
	timestampField = []byte(`"timestamp":"`)
)

// eventKindOf reads the "type" of an event.
func eventKindOf(payload []byte) eventKind {
	i := bytes.Index(payload, typeField)
	if i < 0 {
		return kindOther
	}
	rest := payload[i+len(typeField):]
	switch {
	case bytes.HasPrefix(rest, []byte(`Snapshot"`)):
		return kindSnapshot
	case bytes.HasPrefix(rest, []byte(`Heartbeat"`)):
		return kindHeartbeat
	case bytes.HasPrefix(rest, []byte(`Error"`)):
		return kindError
	}
	return kindOther
}

// eventTimestamp returns the raw "timestamp" string of an event.
func eventTimestamp(payload []byte) ([]byte, bool) {
	i := bytes.Index(payload, timestampField)
	if i < 0 {
		return nil, false
	}
	rest := payload[i+len(timestampField):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// clientFrame is a masked client frame carrying payload (RFC 6455 §5.3).
func clientFrame(op ws.OpCode, payload []byte, mask [4]byte) []byte {
	w := &byteWriter{b: make([]byte, 0, ws.MaxHeaderSize+len(payload))}
	_ = ws.WriteHeader(w, ws.Header{Fin: true, OpCode: op, Masked: true, Mask: mask, Length: int64(len(payload))})
	start := len(w.b)
	w.b = append(w.b, payload...)
	ws.Cipher(w.b[start:], mask, 0)
	return w.b
}

type byteWriter struct{ b []byte }

func (w *byteWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
