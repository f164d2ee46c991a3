package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// newRemoveCommand makes a command that deletes each of its arguments (an id, a name or
// the start of an id) with del: image deregister, snapshot rm, volume rm, key-pair rm.
// Each is asked in turn; a failure is said as it comes and the others still go ahead.
// It prints the id of each one gone (-o json: a list of {"id": …}).
func newRemoveCommand(e *env, use, short, what string, del func(c *client.Client, ctx context.Context, ref string) (string, error)) *cobra.Command {
	name, _, _ := strings.Cut(use, " ")
	return &cobra.Command{
		Use:        use,
		Short:      short,
		SuggestFor: slices.DeleteFunc([]string{"rm", "remove", "delete", "del", "deregister"}, func(s string) bool { return s == name }),
		Args:       minArgs(1, "at least one "+what),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			var last error
			gone := []api.Deleted{}
			for _, ref := range args {
				id, err := del(c, cmd.Context(), ref)
				if err != nil {
					if last != nil {
						reportError(e.stderr, last)
					}
					last = err
					continue
				}
				gone = append(gone, api.Deleted{ID: id})
				if e.output != "json" || e.quiet {
					fmt.Fprintln(e.stdout, id)
				}
			}
			if e.output == "json" && !e.quiet {
				if err := printJSON(e.stdout, gone); err != nil {
					return err
				}
			}
			return last
		},
	}
}
