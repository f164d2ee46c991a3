package peer

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Files from callers. kilnd never opens a path a caller names: the client opens its
// files with its own rights and passes the open descriptors with its request
// (SCM_RIGHTS ancillary data on the request's first bytes), and the request refers to
// them by index. So a caller can register only what it can read.

// maxPassedFiles bounds the descriptors one connection may hold passed and not yet
// taken by a request; more are closed on arrival.
const maxPassedFiles = 32

// fileListener accepts connections as *fileConn, each with its caller known and
// counted against the limits; a connection past them is closed at once.
type fileListener struct {
	*net.UnixListener
	lim *Limiter
}

func (l fileListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		fc := &fileConn{UnixConn: c, lim: l.lim}
		if cred, err := peerCred(c); err == nil {
			fc.caller, fc.known = identify(cred), true
		}
		if l.lim != nil && fc.known {
			if !l.lim.admitConn(fc.caller) {
				c.Close()
				continue
			}
			fc.counted = true
		}
		return fc, nil
	}
}

// peerCred is what the kernel says of the process on the other end of c.
func peerCred(c *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

// Listener makes ln hand out connections that keep descriptors passed on them, within
// lim's limits (none when lim is nil).
func Listener(ln net.Listener, lim *Limiter) net.Listener {
	if ul, ok := ln.(*net.UnixListener); ok {
		return fileListener{ul, lim}
	}
	return ln
}

// fileConn is a Unix connection that keeps the descriptors passed on it until a
// request takes them; those never taken are closed with the connection.
type fileConn struct {
	*net.UnixConn
	caller  Caller
	known   bool // caller is set: the kernel gave the peer's credentials
	lim     *Limiter
	counted bool // the connection is counted by lim
	closed  sync.Once
	mu      sync.Mutex
	files   []*os.File
}

func (c *fileConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var recvErr error
	// The runtime calls recv when the socket may be readable, again after EAGAIN, and
	// returns the read deadline's error or the connection's closing.
	if err := raw.Read(func(fd uintptr) bool {
		n, recvErr = c.recv(int(fd), b)
		return recvErr != unix.EAGAIN
	}); err != nil {
		if oe, ok := err.(*net.OpError); ok { // a read's error, as net/http expects it
			oe.Op, oe.Source, oe.Addr = "read", c.LocalAddr(), c.RemoteAddr()
		}
		return 0, err
	}
	switch {
	case recvErr != nil:
		return 0, &net.OpError{Op: "read", Net: "unix", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("recvmsg", recvErr)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// recv receives once, without waiting, with room for the descriptors the connection and
// its caller may still hold, counted before the call (the kernel closes those that do
// not fit and says so with MSG_CTRUNC): so kilnd never holds a passed descriptor past
// the limits, not even for a moment.
func (c *fileConn) recv(fd int, b []byte) (int, error) {
	own, room, done := c.reserve()
	defer done()
	// Exactly room descriptors' space: the kernel fills what the buffer's length holds.
	oob := make([]byte, unix.CmsgLen(room*4))
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(fd, b, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	kept := c.keep(oob[:max(oobn, 0)], room)
	received(kept)
	c.release(room - kept)
	// Past the caller's limits, not only the connection's own 32: a refusal to log.
	if flags&unix.MSG_CTRUNC != 0 && room < own && c.lim != nil && c.known {
		c.lim.filesRefused(c.caller)
	}
	return n, err
}

// received is told how many descriptors each receive kept (tests watch it).
var received = func(int) {}

// reserve is how many descriptors the next receive may keep: room, counted against the
// caller's limits (release gives back those that did not come), within own, what the
// connection itself may still hold. done ends the receive: a caller's receives go one at
// a time, so that one's reservation never takes another's room.
func (c *fileConn) reserve() (own, room int, done func()) {
	c.mu.Lock()
	own = max(0, maxPassedFiles-len(c.files))
	c.mu.Unlock()
	switch {
	case c.lim == nil:
		return own, own, func() {}
	case !c.known:
		return own, 0, func() {} // descriptors from a caller the kernel did not name are not kept
	}
	done = c.lim.receiving(c.caller.UID)
	return own, c.lim.reserveFiles(c.caller, own), done
}

// keep holds up to room of the descriptors in oob for the connection's next request,
// closes any others, and returns how many it kept.
func (c *fileConn) keep(oob []byte, room int) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	kept := 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if kept == room {
				unix.Close(fd)
				continue
			}
			c.files = append(c.files, os.NewFile(uintptr(fd), "passed file"))
			kept++
		}
	}
	return kept
}

// take returns the descriptors passed so far; the caller closes them and then calls
// release with their number.
func (c *fileConn) take() []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files
	c.files = nil
	return f
}

// release gives back n descriptors taken from c to its caller's count.
func (c *fileConn) release(n int) {
	if c.lim != nil && c.known {
		c.lim.releaseFiles(c.caller.UID, n)
	}
}

func (c *fileConn) Close() error {
	// First the socket: its Close waits for a receive in progress to end, so no
	// descriptor is kept after those held are taken.
	err := c.UnixConn.Close()
	c.closed.Do(func() {
		f := c.take()
		CloseFiles(f)
		c.release(len(f))
		if c.counted {
			c.lim.releaseConn(c.caller.UID)
		}
	})
	return err
}

// CloseFiles closes each of files.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

type connKey struct{}

// Passed are the descriptors that came with a request. A handler claims those it
// keeps; the rest are closed when the request ends.
type Passed struct {
	files []*os.File
	conn  *fileConn // whose caller's count holds them
	n     int       // how many were taken from conn
}

type passedKey struct{}

// WithPassed takes the descriptors passed on the request's connection so far.
func WithPassed(ctx context.Context) (context.Context, *Passed) {
	p := &Passed{}
	if fc, ok := ctx.Value(connKey{}).(*fileConn); ok {
		p.files, p.conn = fc.take(), fc
		p.n = len(p.files)
	}
	return context.WithValue(ctx, passedKey{}, p), p
}

// Done ends the request's hold on its descriptors: it closes those no handler claimed
// and gives all back to the caller's count (a claimed one is the handler's, bounded by
// the operation that holds it).
func (p *Passed) Done() {
	CloseFiles(p.files)
	p.files = nil
	if p.conn != nil {
		p.conn.release(p.n)
		p.n = 0
	}
}

// Files returns the request's passed descriptors without claiming them.
func Files(ctx context.Context) []*os.File {
	if p, ok := ctx.Value(passedKey{}).(*Passed); ok {
		return p.files
	}
	return nil
}

// Claim hands the request's passed descriptors to the caller, which closes them.
func Claim(ctx context.Context) []*os.File {
	p, ok := ctx.Value(passedKey{}).(*Passed)
	if !ok {
		return nil
	}
	f := p.files
	p.files = nil
	return f
}
