package main

import (
	"github.com/spf13/cobra"
)

func newImageInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show an image (IMAGE is an ami- id or a name)",
		Args:  exactArgs(1, "one IMAGE (an ami- id or a name)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := e.client().Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printImage(e, im)
		},
	}
}
