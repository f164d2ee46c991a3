package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Listen opens the API socket at path with the given mode. A socket file left by a
// daemon that is gone is removed; a socket some process still answers on is refused
// with an error wrapping errdefs.ErrUnavailable.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if len(path) >= 108 {
		return nil, fmt.Errorf("socket path %s is %d bytes; Unix sockets allow 107: %w", path, len(path), errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another kilnd is serving on %s; stop it or use another --socket: %w", path, errdefs.ErrUnavailable)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOTSOCK) {
			return nil, fmt.Errorf("socket %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Caller is who is on the other end of the socket, as the kernel says (SO_PEERCRED).
type Caller struct {
	UID, GID uint32
	PID      int32
	User     string // the user name, or the uid in decimal when it has none
}

type callerKey struct{}

// withCaller is http.Server.ConnContext: it reads the peer's credentials once per
// connection.
func withCaller(users *userNames) func(ctx context.Context, c net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return ctx
		}
		raw, err := uc.SyscallConn()
		if err != nil {
			return ctx
		}
		var cred *syscall.Ucred
		var credErr error
		if err := raw.Control(func(fd uintptr) {
			cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		}); err != nil || credErr != nil {
			return ctx
		}
		return context.WithValue(ctx, callerKey{}, Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, User: users.name(cred.Uid)})
	}
}

// callerFrom returns the request's caller; ok is false when the connection gave none.
func callerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
