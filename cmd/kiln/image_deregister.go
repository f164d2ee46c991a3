package main

import (
	"errors"
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
			var errs []error
			for _, ref := range args {
				if err := c.DeregisterImage(cmd.Context(), ref); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(e.stdout, ref)
			}
			return errors.Join(errs...)
		},
	}
}
