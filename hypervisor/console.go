package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// DialConsole connects to the machine's serial console (its ConsoleSocket): what the guest
// writes to its serial port comes out of the connection, and what is written to it the
// guest reads as typed. QEMU logs the guest's output to ConsoleFile whether or not a
// connection is open, so a connection only adds a live view and a keyboard.
//
// QEMU serves one connection at a time (a second would wait unanswered in its backlog),
// so a machine hands out one at a time: while one is open, DialConsole waits up to
// ConsoleBusyWait for it to close (a client that just detached leaves QEMU a few seconds
// to read what it sent last), then fails with errdefs.ErrConflict. The caller closes the
// connection, which frees the console; QEMU then listens again. A machine whose QEMU was
// started without the socket (by a kilnd before it existed) fails with
// errdefs.ErrFailedPrecondition.
//
// Whoever holds the connection must read it steadily: QEMU writes the serial port's
// output to it before logging it, and a connection not read holds the guest's console
// output back (the guest's writes to its console wait).
func (m *Machine) DialConsole(ctx context.Context) (net.Conn, error) {
	free := m.consoleToken()
	t := time.NewTimer(ConsoleBusyWait)
	defer t.Stop()
	select {
	case <-free:
	case <-t.C:
		return nil, fmt.Errorf("the serial console is already attached (one connection at a time): %w", errdefs.ErrConflict)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(m.Dir, ConsoleSocket))
	if err != nil {
		free <- struct{}{}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("its QEMU was started with a serial console that cannot be attached (by an older kilnd): stop and start the instance: %w", errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to the serial console: %w", err)
	}
	return &consoleConn{Conn: c, release: func() { free <- struct{}{} }}, nil
}

// ConsoleBusyWait is how long DialConsole waits for the connection open before it to
// close: longer than a detached client's drain (daemon/console's relayDrain).
var ConsoleBusyWait = 7 * time.Second

// consoleToken is the channel that holds the console's token while it is free.
func (m *Machine) consoleToken() chan struct{} {
	m.consoleMu.Lock()
	defer m.consoleMu.Unlock()
	if m.consoleFree == nil {
		m.consoleFree = make(chan struct{}, 1)
		m.consoleFree <- struct{}{}
	}
	return m.consoleFree
}

// consoleConn frees its machine's console once closed.
type consoleConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *consoleConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite ends what is sent to the guest and leaves its output to be read: QEMU reads
// what was sent, then the end, and closes its side.
func (c *consoleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
