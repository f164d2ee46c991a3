package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/events"
	"kiln/daemon/peer"
)

// streamEvents answers GET /v1/events: the events the caller may see (those of its own
// resources; all for an administrator), oldest first, as JSON lines: from ?since=TIME
// (RFC 3339) or after ?after=SEQUENCE, those passing every ?filter=NAME=VALUE, and with
// ?follow=true those that come next, until the caller goes or kilnd stops. Events
// pruned before the caller read them are told by a notice (api.EventsLost).
func (s *server) streamEvents(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	q := r.URL.Query()
	var query events.Query
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return fmt.Errorf("since %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z: %w", v, errdefs.ErrInvalidArgument)
		}
		query.Since = t
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("after %q: want the sequence of the last event read: %w", v, errdefs.ErrInvalidArgument)
		}
		query.After = n
	}
	switch f := q.Get("follow"); f {
	case "", "false":
	case "true":
		query.Follow = true
	default:
		return fmt.Errorf("follow %q: want true or false: %w", f, errdefs.ErrInvalidArgument)
	}
	match, err := events.ParseFilter(q["filter"])
	if err != nil {
		return err
	}
	admin := s.admin(c)
	query.Account = c.User
	query.Keep = func(ev *api.Event) bool { return (admin || ev.Account == c.User) && match(ev) }

	w.Header().Set("Content-Type", api.MediaTypeEventStream)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush() // a follower learns at once that it is following
	enc := json.NewEncoder(w)
	var werr error
	err = s.events.Stream(r.Context(), query, func(ev api.Event) error {
		if werr = enc.Encode(ev); werr != nil {
			return werr
		}
		if query.Follow {
			werr = rc.Flush()
		}
		return werr
	})
	switch {
	case err == nil, err == werr: // a caller that went is no error of kilnd's
		return nil
	default:
		return &streamedError{err} // the answer has begun: logged, not answered
	}
}
