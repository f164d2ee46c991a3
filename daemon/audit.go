package daemon

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
)

// AuditFile is the audit trail under the root: one JSON line per mutating request.
const AuditFile = "audit.log"

// auditEntry is one line of the audit trail.
type auditEntry struct {
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
func (e *auditEntry) bound() {
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

// auditLog appends entries to the audit file; it is safe for concurrent use.
type auditLog struct {
	mu sync.Mutex
	f  *os.File
}

func openAudit(root string) (*auditLog, error) {
	f, err := os.OpenFile(filepath.Join(root, AuditFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &auditLog{f: f}, nil
}

func (a *auditLog) write(ctx context.Context, e *auditEntry) {
	e.bound()
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.f.Write(append(b, '\n')); err != nil {
		log.G(ctx).WithError(err).Error("audit trail: write failed")
	}
}

func (a *auditLog) Close() error { return a.f.Close() }

type auditKey struct{}

// beginAudit starts the entry of a mutating request: its caller, call and the
// resources its path names.
func beginAudit(r *http.Request, c Caller) (*http.Request, *auditEntry) {
	e := &auditEntry{Time: time.Now().UTC(), UID: c.UID, User: c.User, PID: c.PID, Action: r.Pattern, Resource: []string{}}
	for _, name := range []string{"image", "instance", "volume", "snapshot"} {
		if v := r.PathValue(name); v != "" {
			e.Resource = append(e.Resource, name+"="+v)
		}
	}
	return r.WithContext(context.WithValue(r.Context(), auditKey{}, e)), e
}

// noteCreated adds what a request made to its audit entry.
func noteCreated(ctx context.Context, kind string, ids ...string) {
	if e, ok := ctx.Value(auditKey{}).(*auditEntry); ok {
		for _, id := range ids {
			e.Resource = append(e.Resource, kind+"="+id)
		}
	}
}

// mutating reports whether a request changes anything.
func mutating(r *http.Request) bool {
	return !strings.EqualFold(r.Method, http.MethodGet) && !strings.EqualFold(r.Method, http.MethodHead)
}
