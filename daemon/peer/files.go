package peer

import (
	"context"
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
	// Room for what the connection and its caller may still hold, no more: the kernel
	// closes descriptors that do not fit (MSG_CTRUNC), so a caller past its limit makes
	// kilnd hold at most one read's worth more, on each of its connections reading at
	// once, and keep rarely anything (keep's admitFiles closes what is left over).
	c.mu.Lock()
	room := maxPassedFiles - len(c.files)
	c.mu.Unlock()
	switch {
	case c.lim != nil && c.known:
		room = min(room, c.lim.roomFor(c.caller))
	case c.lim != nil:
		room = 0 // descriptors from a caller the kernel did not name are not kept
	}
	oob := make([]byte, unix.CmsgSpace(max(room, 0)*4))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob) // descriptors arrive close-on-exec
	if oobn > 0 {
		c.keep(oob[:oobn])
	}
	// recvmsg gives -1 with its error (a deadline passed, the peer reset); io.Reader
	// allows no negative count, and bufio panics on one.
	return max(n, 0), err
}

func (c *fileConn) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	room := min(len(fds), maxPassedFiles-len(c.files))
	if c.lim != nil && c.known {
		room = c.lim.admitFiles(c.caller, max(room, 0))
	} else if c.lim != nil {
		room = 0 // descriptors from a caller the kernel did not name are not kept
	}
	for i, fd := range fds {
		if i >= room {
			unix.Close(fd)
			continue
		}
		c.files = append(c.files, os.NewFile(uintptr(fd), "passed file"))
	}
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
	c.closed.Do(func() {
		f := c.take()
		CloseFiles(f)
		c.release(len(f))
		if c.counted {
			c.lim.releaseConn(c.caller.UID)
		}
	})
	return c.UnixConn.Close()
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
