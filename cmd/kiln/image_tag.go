package main

import (
	"github.com/spf13/cobra"
)

func newImageTagCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "tag IMAGE K=V...",
		Short: "Add or replace tags on an image",
		Args:  minArgs(2, "IMAGE and at least one K=V"),
		RunE: func(cmd *cobra.Command, args []string) error {
			tags, err := parseKV(args[1:])
			if err != nil {
				return err
			}
			im, err := e.client().TagImage(cmd.Context(), args[0], tags)
			if err != nil {
				return err
			}
			return printImage(e, im)
		},
	}
}
