package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// LimitSettings bound what callers may hold of kilnd, so that no user can exhaust it for
// the others: how long a request may take to arrive, and how many connections and
// passed descriptors each user and all users may hold open. Zero means the default.
type LimitSettings struct {
	// ReadHeaderSeconds bounds the arrival of a request's headers (default 10).
	ReadHeaderSeconds int `json:"readHeaderSeconds,omitempty"`
	// BodySeconds bounds the arrival of a request's body once its headers are in
	// (default 30).
	BodySeconds int `json:"bodySeconds,omitempty"`
	// IdleSeconds is how long an idle keep-alive connection stays open (default 60).
	IdleSeconds int `json:"idleSeconds,omitempty"`
	// ConnectionsPerUser bounds one user's open connections (default 64).
	ConnectionsPerUser int `json:"connectionsPerUser,omitempty"`
	// Connections bounds all users' open connections (default 1024); ordinary users
	// get 7/8 of it, the rest is kept for root and the admin group.
	Connections int `json:"connections,omitempty"`
	// FilesPerUser bounds the descriptors one user may have passed and not yet
	// handed to a finished request (default 128).
	FilesPerUser int `json:"filesPerUser,omitempty"`
	// Files bounds all users' passed descriptors (default 2048), 7/8 of it for
	// ordinary users.
	Files int `json:"files,omitempty"`
}

// defaultLimits: the CLI holds one or two connections and passes a few descriptors, a
// script a few dozen; callers can make kilnd hold about 3,000 descriptors in all, well
// under its open-file limit, with room for the store and the instances.
var defaultLimits = LimitSettings{
	ReadHeaderSeconds: 10, BodySeconds: 30, IdleSeconds: 60,
	ConnectionsPerUser: 64, Connections: 1024, FilesPerUser: 128, Files: 2048,
}

// resolved returns l with each zero field the default's.
func (l LimitSettings) resolved() LimitSettings {
	for _, f := range []struct{ v, d *int }{
		{&l.ReadHeaderSeconds, &defaultLimits.ReadHeaderSeconds}, {&l.BodySeconds, &defaultLimits.BodySeconds},
		{&l.IdleSeconds, &defaultLimits.IdleSeconds}, {&l.ConnectionsPerUser, &defaultLimits.ConnectionsPerUser},
		{&l.Connections, &defaultLimits.Connections}, {&l.FilesPerUser, &defaultLimits.FilesPerUser},
		{&l.Files, &defaultLimits.Files},
	} {
		if *f.v == 0 {
			*f.v = *f.d
		}
	}
	return l
}

func (l LimitSettings) check() error {
	for name, v := range map[string]int{
		"readHeaderSeconds": l.ReadHeaderSeconds, "bodySeconds": l.BodySeconds, "idleSeconds": l.IdleSeconds,
		"connectionsPerUser": l.ConnectionsPerUser, "connections": l.Connections, "filesPerUser": l.FilesPerUser, "files": l.Files,
	} {
		if v < 0 {
			return fmt.Errorf("limits.%s is %d: want 0 (the default) or more: %w", name, v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// maxHeaderBytes bounds a request's line and headers (net/http's default is 1 MiB): an
// id, a name or a filter is short, and every open connection may hold this much.
const maxHeaderBytes = 64 << 10

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// reserved is the part of a total that only root and the admin group may use.
func reserved(total int) int { return total - total/8 }

// limiter counts the connections and passed descriptors each user holds, and refuses
// what would go past the limits. Root, kilnd's own user and the admin group are held to
// the totals only, and may use the eighth of them that ordinary users may not. It is
// safe for concurrent use.
type limiter struct {
	// settings returns the limits and the admin group in force (they change on reload).
	settings func() (LimitSettings, string)
	self     uint32 // kilnd's uid

	mu                     sync.Mutex
	conns, files           map[uint32]int
	totalConns, totalFiles int
	// warned is when each user was last logged as refused, and how many refusals were
	// not logged since: an offender is logged once, not per attempt.
	warned map[uint32]*offence
}

type offence struct {
	at     time.Time
	quiet  int
	reason string
}

// offenceQuiet is how long refusals of one user go unlogged after one is logged.
const offenceQuiet = 10 * time.Minute

func newLimiter(self uint32, settings func() (LimitSettings, string)) *limiter {
	return &limiter{settings: settings, self: self, conns: map[uint32]int{}, files: map[uint32]int{}, warned: map[uint32]*offence{}}
}

func (l *limiter) privileged(c Caller, admin string) bool {
	return c.UID == 0 || c.UID == l.self || c.InGroup(admin)
}

// admitConn counts a new connection of c, or refuses it (false) when c is past a limit.
// The caller calls releaseConn once for each admitted connection.
func (l *limiter) admitConn(c Caller) bool {
	lim, admin := l.settings()
	lim = lim.resolved()
	l.mu.Lock()
	defer l.mu.Unlock()
	var reason string
	switch {
	case l.totalConns >= lim.Connections:
		reason = fmt.Sprintf("kilnd holds its most connections (%d)", lim.Connections)
	case l.privileged(c, admin):
	case l.conns[c.UID] >= lim.ConnectionsPerUser:
		reason = fmt.Sprintf("the user holds %d connections, the most one user may (limits.connectionsPerUser)", l.conns[c.UID])
	case l.totalConns >= reserved(lim.Connections):
		reason = fmt.Sprintf("users hold %d connections; the rest are kept for root and the admin group", l.totalConns)
	}
	if reason != "" {
		l.offendLocked(c, "connection refused: "+reason)
		return false
	}
	l.conns[c.UID]++
	l.totalConns++
	return true
}

func (l *limiter) releaseConn(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.totalConns--
	if l.conns[uid]--; l.conns[uid] <= 0 {
		delete(l.conns, uid)
	}
}

// admitFiles counts up to n descriptors passed by c and returns how many it may keep;
// the caller closes the rest and calls releaseFiles for those kept once they are gone.
func (l *limiter) admitFiles(c Caller, n int) int {
	lim, admin := l.settings()
	lim = lim.resolved()
	l.mu.Lock()
	defer l.mu.Unlock()
	room := lim.Files - l.totalFiles
	if !l.privileged(c, admin) {
		room = min(room, reserved(lim.Files)-l.totalFiles, lim.FilesPerUser-l.files[c.UID])
	}
	k := max(0, min(n, room))
	if k < n {
		l.offendLocked(c, fmt.Sprintf("passed descriptors closed: the user holds %d, users %d, all %d (limits.filesPerUser, limits.files)",
			l.files[c.UID], l.totalFiles, lim.Files))
	}
	l.files[c.UID] += k
	l.totalFiles += k
	return k
}

func (l *limiter) releaseFiles(uid uint32, n int) {
	if n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.totalFiles -= n
	if l.files[uid] -= n; l.files[uid] <= 0 {
		delete(l.files, uid)
	}
}

// offendLocked logs c's refusal the first time, then once per offenceQuiet with the
// number of refusals in between.
func (l *limiter) offendLocked(c Caller, reason string) {
	o := l.warned[c.UID]
	now := time.Now()
	if o != nil && now.Sub(o.at) < offenceQuiet {
		o.quiet++
		return
	}
	e := log.G(context.Background()).WithField("uid", c.UID).WithField("user", c.User).WithField("pid", c.PID)
	if o != nil {
		e = e.WithField("refusedSince", o.quiet)
	}
	e.Warnf("%s; further refusals of this user are not logged for %s", reason, offenceQuiet)
	l.warned[c.UID] = &offence{at: now, reason: reason}
}

// bodyDeadline bounds the arrival of r's body, so that a client sending a byte a second
// cannot hold its connection and its handler. The deadline is lifted once the body is
// read: net/http then reads the connection in the background, and a deadline passing
// there would cancel a long request's context. A request without a body has none.
func bodyDeadline(w http.ResponseWriter, r *http.Request, d time.Duration) {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return
	}
	r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
}

// deadlineBody lifts its connection's read deadline at the end of the body.
type deadlineBody struct {
	ReadCloser io.ReadCloser
	lift       func()
	once       sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF { // not on a timeout: net/http drains what is left, bounded by the deadline
		b.once.Do(b.lift)
	}
	return n, err
}

func (b *deadlineBody) Close() error { return b.ReadCloser.Close() }
