package naiveedge

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// wsConn is one upgraded connection. The HTTP handler's goroutine is its
// writer (writeLoop) and the only one to touch rw.Writer; a second goroutine
// reads (readLoop) and passes subscriptions and control replies on.
type wsConn struct {
	s    *Server
	conn net.Conn
	rw   *bufio.ReadWriter

	subs       chan proto.Subscription // reader → writer; the newest wins
	ctl        chan ctlFrame           // reader → writer: pongs, errors, close echo
	gone       chan struct{}           // closed when the reader stops
	writerDone chan struct{}           // closed when the writer stops
	goneOnce   sync.Once
}

// ctlFrame is a frame the reader asks the writer to send; last ends the
// connection after it.
type ctlFrame struct {
	op      ws.OpCode
	payload []byte
	last    bool
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		s.log.Debug("websocket upgrade rejected", "err", err)
		return // UpgradeHTTP has answered
	}
	c := &wsConn{
		s: s, conn: conn, rw: rw,
		subs:       make(chan proto.Subscription, 1),
		ctl:        make(chan ctlFrame, 4),
		gone:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if !s.track(c) {
		_ = conn.Close()
		return
	}
	defer s.connWG.Done()
	defer s.untrack(c)
	defer conn.Close()
	go func() {
		defer s.connWG.Done()
		c.readLoop()
	}()
	c.writeLoop()
}

// shutdown closes the socket; both goroutines then stop.
func (c *wsConn) shutdown() { _ = c.conn.Close() }

func (c *wsConn) end() { c.goneOnce.Do(func() { close(c.gone) }) }

// readLoop reads client frames until the connection fails or closes.
func (c *wsConn) readLoop() {
	defer c.end()
	limit := int64(c.s.cfg.MaxMessageBytes)
	for {
		h, err := ws.ReadHeader(c.rw.Reader)
		if err != nil {
			return
		}
		if h.Length > limit {
			c.sendCtl(ctlFrame{op: ws.OpClose, payload: ws.NewCloseFrameBody(ws.StatusMessageTooBig, "message too big"), last: true})
			return
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.rw.Reader, payload); err != nil {
			return
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpText:
			sub, err := proto.ParseSubscription(payload)
			if err != nil {
				c.sendCtl(ctlFrame{op: ws.OpText, payload: encodeError(err.Error())})
				continue
			}
			select { // only this goroutine sends: after the drain there is room
			case <-c.subs:
			default:
			}
			c.subs <- sub
		case ws.OpBinary:
			c.sendCtl(ctlFrame{op: ws.OpText, payload: encodeError("binary frames are not supported")})
		case ws.OpPing:
			c.sendCtl(ctlFrame{op: ws.OpPong, payload: payload})
		case ws.OpClose:
			c.sendCtl(ctlFrame{op: ws.OpClose, payload: payload, last: true})
			return
		}
	}
}

// sendCtl hands f to the writer unless the writer has stopped.
func (c *wsConn) sendCtl(f ctlFrame) {
	select {
	case c.ctl <- f:
	case <-c.writerDone:
	}
}

// writeLoop sends the first Snapshot and then one per tick of the
// subscription's time.Ticker, until the reader stops or a write fails.
func (c *wsConn) writeLoop() {
	defer close(c.writerDone)
	s := c.s
	sub := proto.DefaultSubscription()
	if snap := s.latest.Load(); snap != nil && !c.deliver(snap, proto.GuideMetrics) {
		return
	}
	last := time.Now() // t0, the phase of this connection's ticks
	interval := seconds(sub.IntervalSeconds)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// After a subscription change the ticker is stopped and a one-shot
	// timer fires at the last tick plus the new interval, keeping the phase.
	var realign *time.Timer
	var realignC <-chan time.Time
	var realignAt time.Time
	defer func() {
		if realign != nil {
			realign.Stop()
		}
	}()
	for {
		select {
		case <-c.gone:
			// The reader may have queued a last reply (a close echo).
			for {
				select {
				case f := <-c.ctl:
					if err := c.write(f.op, f.payload); err != nil || f.last {
						return
					}
				default:
					return
				}
			}
		case f := <-c.ctl:
			if err := c.write(f.op, f.payload); err != nil || f.last {
				return
			}
		case t := <-ticker.C:
			// The ticker drops ticks for a slow receiver; t is the
			// scheduled time of the tick delivered.
			if missed := (t.Sub(last)+interval/2)/interval - 1; missed > 0 {
				s.skippedTicks.Add(uint64(missed))
			}
			last = t
			if !c.deliverLatest(sub.SnapshotMetrics()) {
				return
			}
		case sub = <-c.subs:
			interval = seconds(sub.IntervalSeconds)
			ticker.Stop()
			if realign != nil {
				realign.Stop()
				realignC = nil
			}
			now := time.Now()
			if next := last.Add(interval); next.After(now) {
				realign, realignAt = time.NewTimer(next.Sub(now)), next
				realignC = realign.C
				continue
			}
			last = now
			if !c.deliverLatest(sub.SnapshotMetrics()) {
				return
			}
			ticker.Reset(interval)
		case <-realignC:
			realignC = nil
			last = realignAt
			if !c.deliverLatest(sub.SnapshotMetrics()) {
				return
			}
			ticker.Reset(interval)
		}
	}
}

// deliverLatest sends the newest snapshot, if any; false ends the connection.
func (c *wsConn) deliverLatest(set proto.MetricSet) bool {
	snap := c.s.latest.Load()
	if snap == nil {
		return true
	}
	return c.deliver(snap, set)
}

// deliver encodes snap for set (json.Marshal, every time) and writes it.
func (c *wsConn) deliver(snap *proto.Snapshot, set proto.MetricSet) bool {
	payload, err := encodeSnapshot(snap, set)
	if err != nil {
		c.s.log.Error("encode snapshot", "err", err)
		return true
	}
	if err := c.write(ws.OpText, payload); err != nil {
		c.s.writeErrors.Add(1)
		return false
	}
	c.s.deliveries.Add(1)
	return true
}

// write sends one frame: header and payload through the bufio.Writer, then
// a flush, so one write(2) per frame.
func (c *wsConn) write(op ws.OpCode, p []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if err := ws.WriteHeader(c.rw.Writer, ws.Header{Fin: true, OpCode: op, Length: int64(len(p))}); err != nil {
		return err
	}
	if _, err := c.rw.Writer.Write(p); err != nil {
		return err
	}
	return c.rw.Writer.Flush()
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
