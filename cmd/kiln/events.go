package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newEventsCommand(e *env) *cobra.Command {
	var since string
	var opts client.EventsOptions
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the events of your images, instances, volumes and snapshots (--follow: as they come)",
		Long: `Prints the events kilnd recorded for what you own (all of them for an administrator),
oldest first: each image, instance, volume and snapshot change, in the shapes Amazon
EventBridge delivers EC2's events in ("EC2 AMI State Change", "EC2 Instance State-change
Notification", "EBS Volume Notification", "EBS Snapshot Notification"). -o json prints each
event as one JSON line, as kilnd sends it.

--since takes an RFC 3339 time or a duration before now (10m, 2h); --after SEQUENCE
resumes after the last event read (its "sequence"). --follow then prints the events that
come, until interrupted. --filter NAME=VALUE (repeatable) keeps the events that match:
type (image, instance, volume, snapshot), detail-type, resource (an id) and state (the
state entered, or the result: available, running, attached, deleted…).

kilnd keeps a bounded number of events for a bounded time (events in its settings file).
Events pruned before you read them are never skipped in silence: kiln says on stderr how
many were lost (with -o json a "Kiln Events Lost" line says it too), goes on, and exits
with status 1 at the end.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageError{err}
				}
				opts.Since = t
			}
			if opts.After > 0 && since != "" {
				return usageError{fmt.Errorf("--after resumes after an event; --since starts at a time: give one")}
			}
			w := eventPrinter{e: e}
			if err := e.client().Events(cmd.Context(), opts, w.print); err != nil {
				return err
			}
			if w.lost > 0 || w.lostUnknown {
				return exitError{code: 1, msg: "kiln: some events were lost (see above): kilnd's retention (events in its settings file) pruned them before they were read"}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "the events from this time on: RFC 3339, or a duration ago (10m)")
	cmd.Flags().Uint64Var(&opts.After, "after", 0, "the events after this sequence (resume after the last one read)")
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "then print the events as they come, until interrupted")
	cmd.Flags().StringArrayVar(&opts.Filters, "filter", nil, "NAME=VALUE: type, detail-type, resource or state (repeatable)")
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration ago (10m, 2h)", s)
}

// eventPrinter prints events as table lines, ids (-q) or JSON lines, and says on stderr
// when some were lost.
type eventPrinter struct {
	e           *env
	header      bool
	lost        uint64 // events lost, as the notices count them
	lostUnknown bool   // a notice could not count them
}

func (p *eventPrinter) print(ev api.Event) error {
	if ev.DetailType == api.DetailTypeLost {
		var d api.EventsLost
		json.Unmarshal(ev.Detail, &d)
		if d.Missed == 0 {
			p.lostUnknown = true
			fmt.Fprintf(p.e.stderr, "kiln: events lost: %s\n", clean(d.Reason))
		} else {
			p.lost += d.Missed
			fmt.Fprintf(p.e.stderr, "kiln: %d events lost (of all users; sequences %d to %d): %s\n", d.Missed, d.After+1, d.Resume-1, clean(d.Reason))
		}
		if p.e.output == "json" {
			return p.json(ev)
		}
		return nil
	}
	if p.e.output == "json" {
		return p.json(ev)
	}
	kind, resource, state := ev.Summary()
	if p.e.quiet {
		_, err := fmt.Fprintln(p.e.stdout, clean(resource))
		return err
	}
	// A stream cannot be aligned after the fact: fixed widths, wide enough for kiln's
	// ids and states.
	line := func(cells ...string) error {
		_, err := fmt.Fprintf(p.e.stdout, "%-8s  %-20s  %-8s  %-21s  %s\n", cells[0], cells[1], cells[2], cells[3], strings.Join(cells[4:], "  "))
		return err
	}
	if !p.header {
		p.header = true
		if err := line("SEQUENCE", "TIME", "TYPE", "RESOURCE", "STATE", "OWNER"); err != nil {
			return err
		}
	}
	return line(fmt.Sprint(ev.Sequence), ev.Time.Local().Format(time.DateTime), kind, clean(resource), clean(state), clean(ev.Account))
}

func (p *eventPrinter) json(ev api.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.e.stdout, "%s\n", b)
	return err
}
