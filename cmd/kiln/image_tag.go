package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
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
			return confirmImage(e, im, "tagged "+strings.Join(kvList(tags), " "))
		},
	}
}

// confirmImage says in one line what a command did to an image (-q: its id; -o json:
// the image as it is now).
func confirmImage(e *env, im api.Image, did string) error {
	if e.quiet || e.output == "json" {
		return printImage(e, im)
	}
	_, err := fmt.Fprintf(e.stdout, "%s (%s): %s\n", im.ID, clean(im.Name), clean(did))
	return err
}
