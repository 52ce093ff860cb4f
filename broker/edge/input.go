package edge

import (
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// input feeds bytes read from the socket through the frame parser; it runs
// on the poller goroutine (or, for bytes that arrived with the handshake, on
// the handshake goroutine before the poller knows the connection).
func (c *conn) input(ps *parseScratch, data []byte) {
	c.lastRead.Store(c.e.mono())
	c.e.m.bytesRecv.Add(float64(len(data)))
	// Between frames a connection has no input state; the common case (a
	// whole message in one read) is parsed in the goroutine's scratch.
	st := c.in
	if st == nil {
		st = &ps.idle
		*st = inputState{}
	}
	err := st.feed(ps, data, c.e.cfg.MaxMessageBytes, c)
	switch {
	case err != nil:
		c.in = nil
	case st == &ps.idle && st.busy():
		c.in = new(inputState)
		*c.in = *st
	case st != &ps.idle && !st.busy():
		c.in = nil
	}
	ps.idle = inputState{}
	if err == nil || errors.Is(err, errDone) {
		return
	}
	var ce *closeError
	if !errors.As(err, &ce) {
		c.close(reasonIOError)
		return
	}
	c.e.m.errorsByType[ce.kind].Inc()
	reason := reasonProtocolError
	frame := closeFrame(ce.code, ce.reason)
	if ce == errTooBig {
		reason = reasonOversized
		frame = c.e.frameTooBig
	}
	c.mu.Lock()
	if c.state == stateOpen {
		c.startCloseLocked(frame, reason, closeLinger)
	} else {
		// Garbage while closing: stop waiting for a proper close.
		c.closeLocked(reason)
	}
	c.mu.Unlock()
}

// onFrame handles one complete message or control frame (frameSink).
func (c *conn) onFrame(op ws.OpCode, p []byte) error {
	c.e.m.msgsRecv.Inc()
	if op == ws.OpClose {
		return c.onClose(p)
	}
	if !c.isOpen() {
		return nil // closing: only the client's close frame matters now
	}
	switch op {
	case ws.OpText:
		return c.onText(p)
	case ws.OpBinary:
		c.e.m.errorsByType[errTypeBinary].Inc()
		c.reply(frameErrBinary)
	case ws.OpPing:
		pong := framePongEmpty
		if len(p) > 0 {
			pong = buildFrame(ws.OpPong, p)
		}
		c.send(pong, false)
	case ws.OpPong:
		// Proof of life; lastRead already records it.
	}
	return nil
}

// onText handles a subscription message. A valid one replaces the current
// subscription and reschedules (never an immediate Snapshot: see the
// package doc), at once or, when it needs history or a scope lookup, once a
// history worker has prepared it (jobs.go); an invalid one gets an Error
// event and changes nothing.
func (c *conn) onText(p []byte) error {
	if !utf8.Valid(p) {
		return errBadUTF8
	}
	sub, err := proto.ParseSubscription(p)
	if err != nil {
		c.e.m.errorsByType[errTypeBadSubscription].Inc()
		c.reply(errorFrame(err.Error()))
		return nil
	}
	if g := c.grant; g != nil && !g.Allows(sub.Scope) {
		c.e.m.rejected(rejectScope)
		c.reply(errorFrame(scopeDeniedMessage(sub.Scope, *g) + "; the previous subscription stays"))
		return nil
	}
	c.subscribe(sub)
	return nil
}

// onClose handles the client's close frame: echo it when the client
// started the closing handshake, finish when it answers ours.
func (c *conn) onClose(p []byte) error {
	var echo []byte
	switch {
	case len(p) == 0:
		echo = frameCloseEmpty
	case len(p) == 1:
		return protocolError("close frame with a 1-byte payload")
	default:
		code, reason := ws.ParseCloseFrameDataUnsafe(p)
		if err := ws.CheckCloseFrameData(code, reason); err != nil {
			if errors.Is(err, ws.ErrProtocolInvalidUTF8) {
				return errBadUTF8
			}
			return protocolError(err.Error())
		}
		echo = closeFrame(code, "")
	}
	c.mu.Lock()
	switch c.state {
	case stateOpen:
		c.startCloseLocked(echo, reasonClientClose, closeEcho)
	case stateClosing:
		c.closeLocked(c.closeReason())
	}
	c.mu.Unlock()
	return errDone
}
