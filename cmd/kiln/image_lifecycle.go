package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

// when is a time as kiln shows one in a sentence: local, to the second.
func when(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

func newImageDeprecateCommand(e *env) *cobra.Command {
	var at string
	var cancel bool
	cmd := &cobra.Command{
		Use:   "deprecate IMAGE --at TIME | --cancel",
		Short: "Deprecate an image at a time (it stays launchable; others list it only with --include-deprecated)",
		Long: `Deprecate an image at a time, as EC2 does: from then on it is left out of other
users' listings unless they ask with --include-deprecated (you always see yours), and
it stays launchable by anyone it is shared with. TIME is RFC 3339 (2030-01-31T12:00:00Z),
a date (2030-01-31, midnight UTC), or a span from now (90d, 36h); its seconds are
rounded to the minute. --cancel takes the deprecation away.`,
		Args: exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.DeprecateRequest
			switch {
			case cancel == (at != ""):
				return usageError{fmt.Errorf("kiln image deprecate: give --at TIME or --cancel")}
			case cancel:
				req.Cancel = true
			default:
				t, err := parseWhen(at, time.Now())
				if err != nil {
					return usageError{fmt.Errorf("--at %q: %w", at, err)}
				}
				req.At = &t
			}
			im, err := e.client().DeprecateImage(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			did := "no longer deprecated"
			if im.DeprecationTime != nil {
				did = "deprecated from " + when(*im.DeprecationTime)
			}
			return confirmImage(e, im, did)
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "when: RFC 3339, a date, or a span from now (90d, 36h)")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "take the deprecation away")
	return cmd
}

// parseWhen reads a time as deprecate takes it: RFC 3339, a date (midnight UTC), or a
// span from now in days (90d) or a Go duration (36h).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("want RFC 3339 (2030-01-31T12:00:00Z), a date (2030-01-31) or a span from now (90d, 36h)")
}

// newImageStateCommand makes a command of one IMAGE that changes it with change and
// says what it did.
func newImageStateCommand(e *env, use, short, long string, change func(e *env, cmd *cobra.Command, ref string) (api.Image, error), did func(api.Image) string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := change(e, cmd, args[0])
			if err != nil {
				return err
			}
			return confirmImage(e, im, did(im))
		},
	}
}

func newImageDisableCommand(e *env) *cobra.Command {
	return newImageStateCommand(e, "disable IMAGE", "Disable an image: it cannot be launched and is shared with no one",
		`Disable an image, as EC2 does: it cannot be launched, copied or shared, it is private
and shared with no one any more, and only you see it (kiln image ls --include-disabled).
Instances already running from it go on. kiln image enable makes it available again,
shared with no one.`,
		func(e *env, cmd *cobra.Command, ref string) (api.Image, error) {
			return e.client().DisableImage(cmd.Context(), ref)
		},
		func(api.Image) string { return "disabled: no launches, shared with no one" })
}

func newImageEnableCommand(e *env) *cobra.Command {
	return newImageStateCommand(e, "enable IMAGE", "Make a disabled image available again (not shared: share it again)",
		"", func(e *env, cmd *cobra.Command, ref string) (api.Image, error) {
			return e.client().EnableImage(cmd.Context(), ref)
		},
		func(im api.Image) string { return "available; " + launchers(im) })
}

func newImageProtectCommand(e *env) *cobra.Command {
	var cooldown bool
	cmd := newImageStateCommand(e, "protect IMAGE [--cooldown]", "Protect an image from deregistration",
		`Protect an image from deregistration, as EC2 does. With --cooldown, it stays protected
for 24 hours after kiln image unprotect.`,
		func(e *env, cmd *cobra.Command, ref string) (api.Image, error) {
			return e.client().ProtectImage(cmd.Context(), ref, cooldown)
		},
		func(im api.Image) string { return "deregistration protection " + im.DeregistrationProtection })
	cmd.Flags().BoolVar(&cooldown, "cooldown", false, "keep it protected for 24 h after unprotect")
	return cmd
}

func newImageUnprotectCommand(e *env) *cobra.Command {
	return newImageStateCommand(e, "unprotect IMAGE", "Turn off an image's deregistration protection (after its cooldown, if it has one)",
		"", func(e *env, cmd *cobra.Command, ref string) (api.Image, error) {
			return e.client().UnprotectImage(cmd.Context(), ref)
		},
		func(im api.Image) string { return "deregistration protection " + im.DeregistrationProtection })
}

func newImageRestoreCommand(e *env) *cobra.Command {
	return newImageStateCommand(e, "restore IMAGE", "Restore an image from the recycle bin (same id, content, tags and launch permissions)",
		`Restore an image from the recycle bin (kiln recycle-bin ls): it comes back as it was
when deregistered, with the same id, content, tags and launch permissions. IMAGE is its
id, its name or the start of its id.`,
		func(e *env, cmd *cobra.Command, ref string) (api.Image, error) {
			return e.client().RestoreImage(cmd.Context(), ref)
		},
		func(im api.Image) string { return "restored from the recycle bin, " + im.State })
}
