// Package wsclient is a small client for Meridian's Kairos-compatible
// /ws/metrics endpoint, used by `meridian watch`, the integration tests and
// the benchmark harness.
//
// A Client may be read by one goroutine while another writes: writes are
// serialised by a mutex, reads are not (call Next from one goroutine only).
// Pings from the server are answered while reading.
package wsclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meridian-metrics/meridian/proto"
)

// ClosedError is returned by Next when the server closed the connection with
// a close frame; Code is the WebSocket status code (e.g. 1001 going away).
type ClosedError = wsutil.ClosedError

// Client is one /ws/metrics connection.
type Client struct {
	conn net.Conn
	rw   io.ReadWriter
	wmu  sync.Mutex
}

// HandshakeError is returned (wrapped) by Dial when the server answered the
// upgrade request with a plain HTTP response instead of switching protocols.
type HandshakeError struct {
	Status int
	// Message is the start of the response body: the edge says there why
	// it refused (a bad query parameter, an unknown scope).
	Message string
}

func (e *HandshakeError) Error() string {
	msg := fmt.Sprintf("the server refused the WebSocket upgrade with %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Permanent reports whether sending the same request again cannot succeed:
// a 4xx other than 408 (timeout) and 429 (rate limited).
func (e *HandshakeError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// maxRefusalBody bounds how much of a refusal's body Dial reads.
const maxRefusalBody = 512

// Dial connects to a ws:// URL such as ws://127.0.0.1:5900/ws/metrics. A
// refused upgrade returns an error wrapping *HandshakeError.
func Dial(ctx context.Context, url string) (*Client, error) {
	return DialWith(ctx, url, Options{})
}

// Options are how a client proves itself and checks the server.
type Options struct {
	// Token, when set, is sent as "Authorization: Bearer <token>".
	Token string
	// TLS configures wss:// (nil: the system roots).
	TLS *tls.Config
}

// DialWith connects to a ws:// or wss:// URL with o. A refused upgrade
// returns an error wrapping *HandshakeError.
func DialWith(ctx context.Context, url string, o Options) (*Client, error) {
	var refused *HandshakeError
	d := ws.Dialer{Timeout: 10 * time.Second, TLSConfig: o.TLS, OnStatusError: func(status int, _ []byte, resp io.Reader) {
		refused = &HandshakeError{Status: status, Message: refusalMessage(resp)}
	}}
	if o.Token != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + o.Token}})
	}
	conn, br, _, err := d.Dial(ctx, url)
	if refused != nil { // Dial closed the connection
		return nil, fmt.Errorf("dial %s: %w", url, refused)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c := &Client{conn: conn}
	var r io.Reader = conn
	if br != nil {
		// The server's first frame may already sit in the handshake buffer.
		r = io.MultiReader(br, conn)
	}
	c.rw = struct {
		io.Reader
		io.Writer
	}{r, &lockedWriter{c}}
	return c, nil
}

type lockedWriter struct{ c *Client }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.c.conn.Write(p)
}

// refusalMessage is the first line of a refusal's body, if it has one.
func refusalMessage(resp io.Reader) string {
	r, err := http.ReadResponse(bufio.NewReader(resp), nil)
	if err != nil {
		return ""
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRefusalBody))
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	return strings.TrimSpace(line)
}

// Conn exposes the underlying connection (tests tune buffers through it).
func (c *Client) Conn() net.Conn { return c.conn }

// Subscribe sends v (a map or struct) as a JSON subscription message.
func (c *Client) Subscribe(ctx context.Context, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode subscription: %w", err)
	}
	return c.WriteText(ctx, data)
}

// WriteText sends one text message as is.
func (c *Client) WriteText(ctx context.Context, data []byte) error {
	return c.write(ctx, ws.OpText, data)
}

// WriteBinary sends one binary message.
func (c *Client) WriteBinary(ctx context.Context, data []byte) error {
	return c.write(ctx, ws.OpBinary, data)
}

func (c *Client) write(ctx context.Context, op ws.OpCode, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(d)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	if err := wsutil.WriteClientMessage(c.conn, op, data); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	return nil
}

// NextRaw reads the next data message, answering control frames on the way.
// The context's deadline bounds the wait.
func (c *Client) NextRaw(ctx context.Context) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetReadDeadline(d)
	} else {
		_ = c.conn.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	data, _, err := wsutil.ReadServerData(c.rw)
	if err != nil {
		var ce ClosedError
		if errors.As(err, &ce) {
			return nil, ce
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read message: %w", ctx.Err())
		}
		return nil, fmt.Errorf("read message: %w", err)
	}
	return data, nil
}

// Next reads and decodes the next event.
func (c *Client) Next(ctx context.Context) (proto.Event, error) {
	data, err := c.NextRaw(ctx)
	if err != nil {
		return proto.Event{}, err
	}
	return proto.DecodeEvent(data)
}

// NextOfType skips events of other types (e.g. heartbeats) until one of typ.
func (c *Client) NextOfType(ctx context.Context, typ string) (proto.Event, error) {
	for {
		ev, err := c.Next(ctx)
		if err != nil || ev.Type == typ {
			return ev, err
		}
	}
}

// Close sends a normal-closure close frame and closes the connection.
func (c *Client) Close() error {
	c.wmu.Lock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = ws.WriteFrame(c.conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
	c.wmu.Unlock()
	return c.conn.Close()
}
