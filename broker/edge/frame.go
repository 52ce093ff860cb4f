package edge

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/gobwas/ws"
)

// The input path never blocks: the poller reads whatever a socket holds and
// feeds it here. Complete frames are handled at once; an incomplete frame's
// bytes wait in inputState.buf for the next read, bounded by the frame's
// announced length, which is checked against the limits before a single
// payload byte is buffered. A slow or stalled sender therefore costs memory
// proportional to what it actually sent, never a blocked goroutine.

// closeError is a violation that ends the connection with a close frame.
type closeError struct {
	code   ws.StatusCode
	reason string // sent in the close frame (≤ 123 bytes)
	kind   string // errors_total type label
}

func (e *closeError) Error() string {
	return fmt.Sprintf("websocket close %d: %s", e.code, e.reason)
}

func protocolError(reason string) *closeError {
	return &closeError{code: ws.StatusProtocolError, reason: reason, kind: errTypeProtocol}
}

var (
	// errTooBig is reported for a message over the size limit; the
	// connection turns it into 1009.
	errTooBig = &closeError{code: ws.StatusMessageTooBig, reason: "message too big", kind: errTypeOversized}
	// errBadUTF8 is a text message (or close reason) that is not UTF-8.
	errBadUTF8 = &closeError{code: ws.StatusInvalidFramePayloadData, reason: "text is not valid UTF-8", kind: errTypeProtocol}
	// errDone stops parsing: the connection is closing and wants no more.
	errDone = errors.New("connection done")
)

// frameSink receives complete messages (text, binary: op is the first
// fragment's) and control frames. payload is only valid during the call.
type frameSink interface {
	onFrame(op ws.OpCode, payload []byte) error
}

// parseScratch is per-goroutine state for reading headers without
// allocating: ws.ReadHeaderBuffer needs an io.Reader and a 12-byte buffer.
type parseScratch struct {
	r    bytes.Reader
	hb   [ws.MaxHeaderSize - 2]byte
	idle inputState // the state of a connection that had none
}

// header parses a frame header at the start of buf. ok is false when buf
// does not hold a whole header yet.
func (ps *parseScratch) header(buf []byte) (h ws.Header, size int, ok bool, err error) {
	if len(buf) < 2 {
		return h, 0, false, nil
	}
	ps.r.Reset(buf)
	h, err = ws.ReadHeaderBuffer(&ps.r, ps.hb[:])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return h, 0, false, nil
	case err != nil:
		return h, 0, false, protocolError(err.Error())
	}
	return h, len(buf) - ps.r.Len(), true, nil
}

// inputState is one connection's partially received input.
type inputState struct {
	buf   []byte    // an incomplete frame's bytes; nil when none
	msg   []byte    // payload of a fragmented message so far
	msgOp ws.OpCode // the fragmented message's opcode
	frag  bool      // a fragmented message is in progress
}

// busy reports whether the state holds anything (else it may be dropped).
func (st *inputState) busy() bool { return len(st.buf) > 0 || st.frag }

// feed consumes data, which follows whatever was buffered, and hands every
// complete frame to sink. maxMsg bounds a message's payload (all fragments).
// After an error the state must not be fed again.
func (st *inputState) feed(ps *parseScratch, data []byte, maxMsg int, sink frameSink) error {
	buf := data
	if len(st.buf) > 0 {
		st.buf = append(st.buf, data...)
		buf = st.buf
	}
	n, err := st.parse(ps, buf, maxMsg, sink)
	if err != nil {
		st.buf, st.msg = nil, nil
		return err
	}
	st.keep(buf[n:])
	return nil
}

// keep retains rest (an incomplete frame) for the next feed, in a buffer
// sized to it: a connection that stalls mid-frame holds what it sent, not
// the read buffer it arrived in.
func (st *inputState) keep(rest []byte) {
	switch {
	case len(rest) == 0:
		st.buf = nil
	case len(st.buf) > 0 && cap(st.buf) <= 2*len(rest)+1024:
		// rest is inside st.buf: slide it to the front.
		st.buf = st.buf[:copy(st.buf, rest)]
	default:
		b := make([]byte, len(rest), len(rest)+512)
		copy(b, rest)
		st.buf = b
	}
}

// parse handles the complete frames at the start of buf and returns how
// many bytes they took.
func (st *inputState) parse(ps *parseScratch, buf []byte, maxMsg int, sink frameSink) (int, error) {
	consumed := 0
	for {
		h, hsize, ok, err := ps.header(buf[consumed:])
		if err != nil {
			return consumed, err
		}
		if !ok {
			return consumed, nil
		}
		state := ws.StateServerSide
		if st.frag {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return consumed, protocolError(err.Error())
		}
		// The announced length is checked before anything is buffered for it.
		if h.OpCode.IsData() && h.Length > int64(maxMsg-len(st.msg)) {
			return consumed, errTooBig
		}
		end := consumed + hsize + int(h.Length)
		if end > len(buf) {
			return consumed, nil // wait for the rest of the payload
		}
		payload := buf[consumed+hsize : end]
		ws.Cipher(payload, h.Mask, 0)
		consumed = end
		if err := st.dispatch(h, payload, sink); err != nil {
			return consumed, err
		}
	}
}

// dispatch assembles fragmented messages and passes complete ones on.
func (st *inputState) dispatch(h ws.Header, payload []byte, sink frameSink) error {
	switch {
	case h.OpCode.IsControl():
		return sink.onFrame(h.OpCode, payload)
	case h.OpCode == ws.OpContinuation:
		st.msg = append(st.msg, payload...)
		if !h.Fin {
			return nil
		}
		msg, op := st.msg, st.msgOp
		st.msg, st.frag = nil, false
		return sink.onFrame(op, msg)
	case h.Fin:
		return sink.onFrame(h.OpCode, payload)
	default:
		st.frag, st.msgOp = true, h.OpCode
		st.msg = append(st.msg[:0], payload...)
		return nil
	}
}
