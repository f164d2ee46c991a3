package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageCopyCommand(e *env) *cobra.Command {
	var req api.CopyImageRequest
	var opts waitOptions
	cmd := &cobra.Command{
		Use:   "copy IMAGE NAME [--description TEXT] [--copy-tags] [--wait [--timeout DURATION]]",
		Short: "Copy an image: a new image over the same content (no bytes copied)",
		Long: `Copy an image: a new image over the same content (no bytes copied). A copy is
available at once; --wait is there for scripts that pass it to every command.

` + waitTimeoutMeans,
		Args: exactArgs(2, "IMAGE and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			req.Name = args[1]
			c := e.client()
			im, err := c.CopyImage(uncut(cmd.Context()), args[0], req)
			if err != nil {
				return err
			}
			// No bytes to count, so no bar (one at 100 % would claim a copy that never
			// happened): the line says so.
			if opts.wait && im.State != "available" {
				if im, err = waitImageUntil(cmd.Context(), e, c, &opts, im, "being copied"); err != nil {
					return err
				}
			}
			return confirmImage(e, im, fmt.Sprintf("%s, a copy of %s (no bytes copied: it shares its layers)", im.State, im.CopiedFromID))
		},
	}
	cmd.Flags().StringVar(&req.Description, "description", "", "description (default: the source's)")
	cmd.Flags().BoolVar(&req.CopyTags, "copy-tags", false, "copy the source's tags too")
	opts.addFlags(cmd, "the copy is available (a copy is available at once)", timeoutImageCopy)
	return cmd
}
