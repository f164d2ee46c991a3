package peer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/containerd/log"

	"kiln/daemon/settings"
)

// reserved is the part of a total that only root and the admin group may use.
func reserved(total int) int { return total - total/8 }

// Limiter counts the connections and passed descriptors each user holds, and refuses
// what would go past the limits. Root, kilnd's own user and the admin group are held to
// the totals only, and may use the eighth of them that ordinary users may not. It is
// safe for concurrent use.
type Limiter struct {
	// settings returns the limits and the admin group in force (they change on reload).
	settings func() (settings.Limits, string)
	self     uint32 // kilnd's uid

	mu                     sync.Mutex
	conns, files           map[uint32]int
	totalConns, totalFiles int
	// warned is when each user was last logged as refused, and how many refusals were
	// not logged since: an offender is logged once, not per attempt.
	warned map[uint32]*offence
	// receives holds each user's receiving lock (receiving), once the user connected.
	receives map[uint32]*sync.Mutex
}

type offence struct {
	at     time.Time
	quiet  int
	reason string
}

// offenceQuiet is how long refusals of one user go unlogged after one is logged.
const offenceQuiet = 10 * time.Minute

// NewLimiter makes the limiter of a kilnd running as uid self; settings gives the
// limits and the admin group in force.
func NewLimiter(self uint32, settings func() (settings.Limits, string)) *Limiter {
	return &Limiter{settings: settings, self: self, conns: map[uint32]int{}, files: map[uint32]int{}, warned: map[uint32]*offence{}, receives: map[uint32]*sync.Mutex{}}
}

func (l *Limiter) privileged(c Caller, admin string) bool {
	return c.UID == 0 || c.UID == l.self || c.InGroup(admin)
}

// admitConn counts a new connection of c, or refuses it (false) when c is past a limit.
// The caller calls releaseConn once for each admitted connection.
func (l *Limiter) admitConn(c Caller) bool {
	lim, admin := l.settings()
	lim = lim.Resolved()
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

func (l *Limiter) releaseConn(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.totalConns--
	if l.conns[uid]--; l.conns[uid] <= 0 {
		delete(l.conns, uid)
	}
}

// reserveFiles counts up to n descriptors c may be about to receive and returns how
// many: a connection receives at most that many and gives back what did not come with
// releaseFiles. Counted before they arrive, a user's descriptors stay within the limits
// even while many of its connections receive at once.
func (l *Limiter) reserveFiles(c Caller, n int) int {
	lim, admin := l.settings()
	lim = lim.Resolved()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := max(0, min(n, l.roomLocked(c, lim, admin)))
	l.files[c.UID] += k
	l.totalFiles += k
	return k
}

// receiving waits for the user's receive in progress, if any, and returns the function
// that ends this one. A receive reserves room for as many descriptors as may come
// (reserveFiles), and two of one user's at once would each find the other's reservation
// held: the second would lose descriptors within the limits.
func (l *Limiter) receiving(uid uint32) (done func()) {
	l.mu.Lock()
	m := l.receives[uid]
	if m == nil {
		m = &sync.Mutex{}
		l.receives[uid] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// filesRefused logs (once in a while) that descriptors c passed were closed unread,
// because c had no room left for them.
func (l *Limiter) filesRefused(c Caller) {
	lim, _ := l.settings()
	lim = lim.Resolved()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.offendLocked(c, fmt.Sprintf("passed descriptors closed: the user holds %d, users %d, all %d (limits.filesPerUser, limits.files)",
		l.files[c.UID], l.totalFiles, lim.Files))
}

func (l *Limiter) roomLocked(c Caller, lim settings.Limits, admin string) int {
	room := lim.Files - l.totalFiles
	if !l.privileged(c, admin) {
		room = min(room, reserved(lim.Files)-l.totalFiles, lim.FilesPerUser-l.files[c.UID])
	}
	return room
}

func (l *Limiter) releaseFiles(uid uint32, n int) {
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
func (l *Limiter) offendLocked(c Caller, reason string) {
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

// BodyDeadline bounds the arrival of r's body, so that a client sending a byte a second
// cannot hold its connection and its handler. The deadline is lifted once the body is
// read: net/http then reads the connection in the background, and a deadline passing
// there would cancel a long request's context. A request without a body has none.
func BodyDeadline(w http.ResponseWriter, r *http.Request, d time.Duration) {
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
