package daemon

import (
	"context"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Files from callers. kilnd never opens a path a caller names: the client opens its
// files with its own rights and passes the open descriptors with its request
// (SCM_RIGHTS ancillary data on the request's first bytes), and the request refers to
// them by index. So a caller can register only what it can read.

// maxPassedFiles bounds the descriptors one connection may hold passed and not yet
// taken by a request; more are closed on arrival.
const maxPassedFiles = 32

// fileListener accepts connections as *fileConn.
type fileListener struct{ *net.UnixListener }

func (l fileListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &fileConn{UnixConn: c}, nil
}

// withFiles makes ln hand out connections that keep descriptors passed on them.
func withFiles(ln net.Listener) net.Listener {
	if ul, ok := ln.(*net.UnixListener); ok {
		return fileListener{ul}
	}
	return ln
}

// fileConn is a Unix connection that keeps the descriptors passed on it until a
// request takes them; those never taken are closed with the connection.
type fileConn struct {
	*net.UnixConn
	mu    sync.Mutex
	files []*os.File
}

func (c *fileConn) Read(b []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(maxPassedFiles*4))
	n, oobn, _, _, err := c.ReadMsgUnix(b, oob) // descriptors arrive close-on-exec
	if oobn > 0 {
		c.keep(oob[:oobn])
	}
	return n, err
}

func (c *fileConn) keep(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if len(c.files) >= maxPassedFiles {
				unix.Close(fd)
				continue
			}
			c.files = append(c.files, os.NewFile(uintptr(fd), "passed file"))
		}
	}
}

// take returns the descriptors passed so far; the caller closes them.
func (c *fileConn) take() []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files
	c.files = nil
	return f
}

func (c *fileConn) Close() error {
	closeFiles(c.take())
	return c.UnixConn.Close()
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

type connKey struct{}

// passedFiles are the descriptors that came with a request. A handler claims those it
// keeps; the rest are closed when the request ends.
type passedFiles struct {
	files []*os.File
}

type passedKey struct{}

// withPassedFiles takes the descriptors passed on the request's connection so far.
func withPassedFiles(ctx context.Context) (context.Context, *passedFiles) {
	p := &passedFiles{}
	if fc, ok := ctx.Value(connKey{}).(*fileConn); ok {
		p.files = fc.take()
	}
	return context.WithValue(ctx, passedKey{}, p), p
}

// passedFilesOf returns the request's passed descriptors without claiming them.
func passedFilesOf(ctx context.Context) []*os.File {
	if p, ok := ctx.Value(passedKey{}).(*passedFiles); ok {
		return p.files
	}
	return nil
}

// claimFiles hands the request's passed descriptors to the caller, which closes them.
func claimFiles(ctx context.Context) []*os.File {
	p, ok := ctx.Value(passedKey{}).(*passedFiles)
	if !ok {
		return nil
	}
	f := p.files
	p.files = nil
	return f
}
