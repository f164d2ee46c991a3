package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"
)

// Defaults for a Client.
const (
	DefaultTimeout    = 10 * time.Second // one command, or the greeting
	DefaultMaxMessage = 1 << 20          // bytes of one QMP message
	eventBuffer       = 64               // events a slow subscriber may fall behind by
)

// ErrClosed is returned by a Client whose connection is gone.
var ErrClosed = errors.New("qmp: connection closed")

// Error is an error QEMU answered a command with; it keeps QMP's class and text.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// reply is one answer to a command: its raw message, or the connection's failure.
type reply struct {
	msg []byte
	err error
}

// Client is a QMP connection. It is safe for concurrent use: commands may run from many
// goroutines, each waiting for its own reply (matched by id). Close it with Disconnect.
type Client struct {
	path       string
	timeout    time.Duration
	maxMessage int

	conn net.Conn

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	subs    map[chan qmp.Event]struct{}
	err     error // why the reader stopped; set once
	dropped uint64

	done chan struct{} // closed when the reader stops
}

// Option sets a Client's limits.
type Option func(*Client)

// WithTimeout bounds the greeting and each command (default DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithMaxMessage bounds one QMP message (default DefaultMaxMessage). A larger message
// fails the connection.
func WithMaxMessage(n int) Option { return func(c *Client) { c.maxMessage = n } }

// Dial connects to the QMP socket at path, reads QEMU's greeting and negotiates
// capabilities, all within ctx and the client's timeout.
func Dial(ctx context.Context, path string, opts ...Option) (*Client, error) {
	c := &Client{path: path, timeout: DefaultTimeout, maxMessage: DefaultMaxMessage,
		pending: map[string]chan reply{}, subs: map[chan qmp.Event]struct{}{}, done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	c.conn = conn
	r := bufio.NewReaderSize(conn, 64<<10)
	deadline, _ := ctx.Deadline()
	conn.SetReadDeadline(deadline)
	// A listener made by kilnd accepts before QEMU runs: the greeting wait ends with ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	greeting, err := readMessage(r, c.maxMessage)
	stop()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: greeting: %w", path, err)
	}
	var g struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if json.Unmarshal(greeting, &g) != nil || g.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: greeting is not QMP's: %.80q", path, greeting)
	}
	conn.SetReadDeadline(time.Time{})
	go c.read(r)
	if _, err := c.RunContext(ctx, []byte(`{"execute":"qmp_capabilities"}`)); err != nil {
		c.Disconnect()
		return nil, err
	}
	return c, nil
}

// readMessage reads one newline-terminated QMP message of at most max bytes.
func readMessage(r *bufio.Reader, max int) ([]byte, error) {
	var msg []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(msg)+len(chunk) > max {
			return nil, fmt.Errorf("a QMP message is over %d bytes", max)
		}
		msg = append(msg, chunk...)
		switch {
		case err == nil:
			if m := bytes.TrimSpace(msg); len(m) > 0 {
				return m, nil
			}
			msg = msg[:0] // a blank line
		case errors.Is(err, bufio.ErrBufferFull):
		default:
			return nil, err
		}
	}
}

// read is the one reader of the connection: it hands replies to their commands and
// events to every subscriber, never blocking on either.
func (c *Client) read(r *bufio.Reader) {
	var err error
	for {
		var msg []byte
		if msg, err = readMessage(r, c.maxMessage); err != nil {
			break
		}
		var m struct {
			ID    json.RawMessage `json:"id"`
			Event string          `json:"event"`
		}
		if err = json.Unmarshal(msg, &m); err != nil {
			err = fmt.Errorf("malformed QMP message %.80q: %w", msg, err)
			break
		}
		if m.Event != "" {
			var ev qmp.Event
			if json.Unmarshal(msg, &ev) == nil {
				c.publish(ev)
			}
			continue
		}
		id, _ := strconv.Unquote(string(m.ID))
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- reply{msg: msg} // buffered: never blocks
		}
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	for id, ch := range c.pending {
		ch <- reply{err: c.err}
		delete(c.pending, id)
	}
	for ch := range c.subs {
		close(ch)
		delete(c.subs, ch)
	}
	c.mu.Unlock()
	c.conn.Close()
	close(c.done)
}

func (c *Client) publish(ev qmp.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- ev:
		default:
			c.dropped++ // a subscriber that does not keep up loses events, the others do not wait
		}
	}
}

// Connect is part of qmp.Monitor; a Client is connected by Dial.
func (c *Client) Connect() error {
	select {
	case <-c.done:
		return c.closedErr()
	default:
		return nil
	}
}

// Disconnect closes the connection; waiting commands fail with ErrClosed. It is
// idempotent.
func (c *Client) Disconnect() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	c.mu.Unlock()
	c.conn.Close()
	<-c.done
	return nil
}

// Done is closed when the connection is gone (QEMU exited, or Disconnect).
func (c *Client) Done() <-chan struct{} { return c.done }

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Run runs a QMP command (a JSON object with "execute") within the client's timeout and
// returns QEMU's reply message. A QMP error reply returns *Error.
func (c *Client) Run(cmd []byte) ([]byte, error) {
	return c.RunContext(context.Background(), cmd)
}

// RunContext is Run bounded also by ctx.
func (c *Client) RunContext(ctx context.Context, cmd []byte) ([]byte, error) {
	return c.run(ctx, cmd, nil)
}

// RunWithFile is RunContext for a command that takes a descriptor (add-fd, getfd): f
// travels with the command as SCM_RIGHTS, in the same write. The caller keeps f (QEMU
// has its own copy once the command is read) and closes it.
func (c *Client) RunWithFile(ctx context.Context, cmd []byte, f *os.File) ([]byte, error) {
	return c.run(ctx, cmd, f)
}

func (c *Client) run(ctx context.Context, cmd []byte, f *os.File) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(cmd, &m); err != nil || m["execute"] == nil {
		return nil, fmt.Errorf("qmp: not a command: %.80q", cmd)
	}
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.nextID++
	id := "kiln-" + strconv.FormatUint(c.nextID, 10)
	c.pending[id] = ch
	c.mu.Unlock()
	m["id"], _ = json.Marshal(id)
	b, _ := json.Marshal(m)

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	c.conn.SetWriteDeadline(deadline)
	err := c.write(append(b, '\n'), f)
	if err == nil {
		select {
		case r := <-ch:
			return decodeReply(r)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
	return nil, fmt.Errorf("qmp %s: %s: %w", c.path, m["execute"], err)
}

// write sends one message, with f as SCM_RIGHTS when given.
func (c *Client) write(b []byte, f *os.File) error {
	if f == nil {
		_, err := c.conn.Write(b)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return errors.New("descriptors travel only over a Unix socket")
	}
	n, oobn, err := uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	switch {
	case err != nil:
		return err
	case n != len(b) || oobn == 0:
		// A short write of one small command leaves the stream unusable; say so.
		return fmt.Errorf("wrote %d of %d bytes with the descriptor", n, len(b))
	}
	return nil
}

func decodeReply(r reply) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	var m struct {
		Error *Error `json:"error"`
	}
	if err := json.Unmarshal(r.msg, &m); err != nil {
		return nil, err
	}
	if m.Error != nil {
		return nil, m.Error
	}
	return r.msg, nil
}

// Events returns a channel of every event from now on, closed when ctx ends or the
// connection goes. A subscriber that falls more than 64 events behind loses events;
// it never holds up the connection or the other subscribers.
func (c *Client) Events(ctx context.Context) (<-chan qmp.Event, error) {
	ch := make(chan qmp.Event, eventBuffer)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-c.done:
			return // the reader closed ch
		}
		c.mu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.mu.Unlock()
	}()
	return ch, nil
}

var _ qmp.Monitor = (*Client)(nil)
