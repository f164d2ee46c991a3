package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"kiln/daemon/api"
)

// EventsOptions are what Events asks for.
type EventsOptions struct {
	// Since: the events from this time on (all kept when zero); After: those after this
	// sequence instead (to resume after the last one read).
	Since time.Time
	After uint64
	// Follow: then the events that come, until ctx ends.
	Follow bool
	// Filters are NAME=VALUE: type, detail-type, resource, state.
	Filters []string
}

// Events calls fn with each event the caller may see that opts ask for, oldest first
// (an api.DetailTypeLost notice where events were pruned before they were read), and
// returns when the events kept are read (without Follow), when ctx ends (nil), or with
// fn's error.
func (c *Client) Events(ctx context.Context, opts EventsOptions, fn func(api.Event) error) error {
	q := url.Values{}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	if opts.After > 0 {
		q.Set("after", strconv.FormatUint(opts.After, 10))
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	q["filter"] = opts.Filters
	resp, err := c.open(ctx, c.hc, http.MethodGet, "/events", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("kilnd's event stream: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("kilnd's event stream: %w", err)
	}
	if opts.Follow {
		return fmt.Errorf("kilnd's event stream ended (kilnd stopped?): %w", ErrDaemonUnreachable)
	}
	return nil
}
