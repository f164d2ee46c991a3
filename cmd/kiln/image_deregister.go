package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newImageDeregisterCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister IMAGE...",
		Short: "Deregister images: they can no longer be launched; 'kiln gc' frees their content",
		Args:  minArgs(1, "at least one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			var last error
			failed := 0
			for _, ref := range args {
				if err := c.DeregisterImage(cmd.Context(), ref); err != nil {
					// Say each failure as it comes; the others still go ahead.
					if failed > 0 {
						reportError(e.stderr, last)
					}
					last = err
					failed++
					continue
				}
				fmt.Fprintln(e.stdout, ref)
			}
			return last
		},
	}
}
