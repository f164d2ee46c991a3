package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/log"

	"kiln/daemon/peer"
)

// File is the audit trail under the root: one JSON line per mutating request.
const File = "audit.log"

// Entry is one line of the audit trail.
type Entry struct {
	Time     time.Time `json:"time"`
	UID      uint32    `json:"uid"`
	User     string    `json:"user"`
	PID      int32     `json:"pid"`
	Action   string    `json:"action"`   // the API call, as "POST /v1/images/{image}/share"
	Resource []string  `json:"resource"` // what it named and what it made, as "image=ami-…"
	Result   string    `json:"result"`   // "ok", or the error code
	Message  string    `json:"message,omitempty"`
	// Cut says that a resource or the message was longer than the trail keeps
	// (auditFieldMax); each cut value ends saying how long it was.
	Cut bool `json:"cut,omitempty"`
}

// Bounds of an audit line, so that a caller naming huge references cannot grow the
// trail by more than a few KiB a request: a resource or message is cut to
// auditFieldMax bytes, and at most auditResourcesMax resources are kept.
const (
	auditFieldMax     = 256
	auditResourcesMax = 16
)

// bound cuts e's values to the audit line's bounds.
func (e *Entry) bound() {
	cut := func(s string) string {
		if len(s) <= auditFieldMax {
			return s
		}
		e.Cut = true
		keep := auditFieldMax
		for keep > 0 && !utf8.RuneStart(s[keep]) {
			keep--
		}
		return fmt.Sprintf("%s…[cut: %d bytes]", s[:keep], len(s))
	}
	if len(e.Resource) > auditResourcesMax {
		n := len(e.Resource)
		e.Resource = append(e.Resource[:auditResourcesMax:auditResourcesMax], fmt.Sprintf("…[cut: %d resources]", n))
		e.Cut = true
	}
	for i, r := range e.Resource {
		e.Resource[i] = cut(r)
	}
	e.User = cut(e.User)
	e.Action = cut(e.Action)
	e.Message = cut(e.Message)
}

// Log is the audit trail: it appends entries to its file, which it owns. It is
// safe for concurrent use: Write, Reopen and Close may run at once, each under mu.
type Log struct {
	path string
	mu   sync.Mutex
	f    *os.File // nil once closed
}

// Open opens (creating it when missing) the audit trail under root.
func Open(root string) (*Log, error) {
	a := &Log{path: filepath.Join(root, File)}
	f, err := a.open()
	if err != nil {
		return nil, err
	}
	a.f = f
	return a, nil
}

func (a *Log) open() (*os.File, error) {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	return f, nil
}

// Reopen opens the trail's path again, so that after a rotation (the file renamed away,
// then SIGHUP) new lines go to a new file, and closes the file it replaces. When the
// path cannot be opened, the trail keeps writing to the file it has and Reopen returns
// why. After Close it does nothing.
func (a *Log) Reopen() error {
	f, err := a.open()
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.f
	if old == nil { // closed meanwhile
		a.mu.Unlock()
		return f.Close()
	}
	a.f = f
	a.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("audit trail: close the file it replaced: %w", err)
	}
	return nil
}

// Write appends e; an error is logged, never returned: the request it records is done.
func (a *Log) Write(ctx context.Context, e *Entry) {
	e.bound()
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		err = os.ErrClosed
	} else {
		_, err = a.f.Write(append(b, '\n'))
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("path", a.path).Error("audit trail: write failed")
	}
}

// Close closes the trail's file; later writes are logged as failed. It is idempotent.
func (a *Log) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

type auditKey struct{}

// Begin starts the entry of a mutating request: its caller, call and the
// resources its path names.
func Begin(r *http.Request, c peer.Caller) (*http.Request, *Entry) {
	e := &Entry{Time: time.Now().UTC(), UID: c.UID, User: c.User, PID: c.PID, Action: r.Pattern, Resource: []string{}}
	for _, name := range []string{"image", "instance", "volume", "snapshot", "key"} {
		if v := r.PathValue(name); v != "" {
			e.Resource = append(e.Resource, name+"="+v)
		}
	}
	return r.WithContext(context.WithValue(r.Context(), auditKey{}, e)), e
}

// NoteCreated adds what a request made to its audit entry.
func NoteCreated(ctx context.Context, kind string, ids ...string) {
	if e, ok := ctx.Value(auditKey{}).(*Entry); ok {
		for _, id := range ids {
			e.Resource = append(e.Resource, kind+"="+id)
		}
	}
}

// Mutating reports whether a request changes anything.
func Mutating(r *http.Request) bool {
	return !strings.EqualFold(r.Method, http.MethodGet) && !strings.EqualFold(r.Method, http.MethodHead)
}
