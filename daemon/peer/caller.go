package peer

import (
	"context"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

// Caller is who is on the other end of the socket: the kernel says which process and
// user (SO_PEERCRED); the system's user and group databases give the names. The Unix
// user is the account.
type Caller struct {
	UID, GID uint32
	PID      int32
	User     string   // the user name, or the uid in decimal when it has none
	Groups   []string // names of the caller's groups: its process group and its user's groups
	GIDs     []uint32 // the same groups by id
}

// InGroup reports whether the caller is a member of the named group.
func (c Caller) InGroup(name string) bool {
	return name != "" && slices.Contains(c.Groups, name)
}

// identify makes the Caller of a process with credentials cred. Names are looked up
// each time, so a user added to a group is seen at its next connection.
func identify(cred *syscall.Ucred) Caller {
	c := Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, User: strconv.FormatUint(uint64(cred.Uid), 10)}
	gids := []string{strconv.FormatUint(uint64(cred.Gid), 10)}
	if u, err := user.LookupId(c.User); err == nil {
		c.User = u.Username
		if more, err := u.GroupIds(); err == nil {
			gids = append(gids, more...)
		}
	}
	for _, gid := range gids {
		n, err := strconv.ParseUint(gid, 10, 32)
		if err != nil || slices.Contains(c.GIDs, uint32(n)) {
			continue
		}
		name := gid
		if g, err := user.LookupGroupId(gid); err == nil {
			name = g.Name
		}
		c.GIDs = append(c.GIDs, uint32(n))
		c.Groups = append(c.Groups, name)
	}
	return c
}

type callerKey struct{}

// Identify makes the Caller of a Unix user that is not on the socket (a request signed
// with an access key of the user's): as the socket's caller, with no process. Names
// are looked up each time, as for a connection. A uid the host no longer knows is an
// error: its keys are nobody's.
func Identify(uid uint32) (Caller, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return Caller{}, fmt.Errorf("uid %d: no such user on this host: %w", uid, errdefs.ErrPermissionDenied)
	}
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return identify(&syscall.Ucred{Uid: uid, Gid: uint32(gid)}), nil
}

// NewContext gives ctx the caller c, as WithCaller gives a connection's requests theirs.
func NewContext(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// WithCaller is http.Server.ConnContext: it gives the requests of a connection the
// caller the listener found (SO_PEERCRED, read once per connection), and the
// connection, so that handlers can take the files it passed.
func WithCaller(ctx context.Context, nc net.Conn) context.Context {
	fc, ok := nc.(*fileConn)
	if !ok || !fc.known {
		return ctx
	}
	ctx = context.WithValue(ctx, connKey{}, fc)
	return context.WithValue(ctx, callerKey{}, fc.caller)
}

// CallerOf returns the request's caller; ok is false when the connection gave none.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// CheckAccounts refuses user and group names this host does not know, so that a typo
// never shares an image with nobody (or with whoever gets that name later).
func CheckAccounts(users, groups []string) error {
	for _, u := range users {
		if _, err := user.Lookup(u); err != nil {
			return fmt.Errorf("user %q: no such user on this host: %w", ids.Clip(u), errdefs.ErrInvalidArgument)
		}
	}
	for _, g := range groups {
		if _, err := user.LookupGroup(g); err != nil {
			return fmt.Errorf("group %q: no such group on this host: %w", ids.Clip(g), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
