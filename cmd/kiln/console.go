package main

import (
	"github.com/spf13/cobra"
)

func newConsoleCommand(e *env) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "console INSTANCE",
		Short: "Print an instance's serial console log (--follow: and what comes next)",
		Args:  exactArgs(1, "one INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.client().Console(cmd.Context(), args[0], follow, e.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the instance stops")
	return cmd
}
