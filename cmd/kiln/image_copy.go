package main

import (
	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageCopyCommand(e *env) *cobra.Command {
	var req api.CopyImageRequest
	var wait bool
	cmd := &cobra.Command{
		Use:   "copy IMAGE NAME [--description TEXT] [--copy-tags]",
		Short: "Copy an image: a new image over the same content (no bytes copied)",
		Args:  exactArgs(2, "IMAGE and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[1]
			im, err := e.client().CopyImage(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return printImage(e, im)
		},
	}
	cmd.Flags().StringVar(&req.Description, "description", "", "description (default: the source's)")
	cmd.Flags().BoolVar(&req.CopyTags, "copy-tags", false, "copy the source's tags too")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the copy is available (a copy is available at once)")
	return cmd
}
