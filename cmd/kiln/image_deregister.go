package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newImageDeregisterCommand(e *env) *cobra.Command {
	return newRemoveCommand(e, "deregister IMAGE...",
		"Deregister images: they can no longer be launched; 'kiln gc' frees their content (a recycle bin rule keeps them restorable)",
		"IMAGE", binNote(e, "image", (*client.Client).Deregister))
}

// binNote makes a delete that says on stderr (not with -q or -o json) when the recycle
// bin kept what it deleted, until when, and how to restore it.
func binNote(e *env, what string, del func(*client.Client, context.Context, string) (api.Deleted, error)) func(*client.Client, context.Context, string) (string, error) {
	return func(c *client.Client, ctx context.Context, ref string) (string, error) {
		d, err := del(c, ctx, ref)
		if err == nil && d.RecycleBinExitTime != nil && !e.quiet && e.output != "json" {
			fmt.Fprintf(e.stderr, "%s is in the recycle bin until %s: kiln %s restore %s\n", d.ID, when(*d.RecycleBinExitTime), what, d.ID)
		}
		return d.ID, err
	}
}
