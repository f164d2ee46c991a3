package client

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
)

// openRegular opens a file of the caller's to pass to kilnd: without blocking (a FIFO
// with no writer, or a device, would hold open() forever) and only when it is a regular
// file, checked on the descriptor itself before anything is read. A refusal wraps
// errdefs.ErrInvalidArgument.
func openRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: kiln registers only files you can read", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s): kiln registers disk, kernel and initrd files only: %w", path, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// passing returns an HTTP client whose one request carries files: their descriptors
// go with the request's first bytes (SCM_RIGHTS), on a connection of its own that is
// closed after the answer.
func (c *Client) passing(files []*os.File) *http.Client {
	if len(files) == 0 {
		return c.hc
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, "unix", c.socket)
			if err != nil {
				return nil, err
			}
			return &rightsConn{UnixConn: nc.(*net.UnixConn), rights: syscall.UnixRights(fds...)}, nil
		},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr}
}

// rightsConn sends its rights with the first bytes written.
type rightsConn struct {
	*net.UnixConn
	once   sync.Once
	rights []byte
}

func (c *rightsConn) Write(b []byte) (int, error) {
	var (
		n    int
		err  error
		sent bool
	)
	c.once.Do(func() {
		sent = true
		n, _, err = c.WriteMsgUnix(b, c.rights, nil)
	})
	if !sent {
		return c.UnixConn.Write(b)
	}
	if err != nil || n == len(b) {
		return n, err
	}
	m, err := c.UnixConn.Write(b[n:])
	return n + m, err
}
