package main

import (
	"github.com/spf13/cobra"
)

func newImageUntagCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "untag IMAGE K...",
		Short: "Remove tags from an image",
		Args:  minArgs(2, "IMAGE and at least one tag key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := e.client().UntagImage(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			return printImage(e, im)
		},
	}
}
