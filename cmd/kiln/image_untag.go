package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newImageUntagCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "untag IMAGE K...",
		Short: "Remove tags from an image (a key it does not have is said, not an error)",
		Args:  minArgs(2, "IMAGE and at least one tag key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			before, err := c.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var gone, absent []string
			for _, k := range args[1:] {
				if _, ok := before.Tags[k]; ok {
					gone = append(gone, k)
				} else {
					absent = append(absent, k)
				}
			}
			im, err := c.UntagImage(cmd.Context(), before.ID, args[1:])
			if err != nil {
				return err
			}
			for _, k := range absent {
				fmt.Fprintf(e.stderr, "kiln: %s (%s) had no tag %q\n", im.ID, clean(im.Name), k)
			}
			did := "untagged " + strings.Join(gone, " ")
			if len(gone) == 0 {
				did = "no tag removed"
			}
			return confirmImage(e, im, did)
		},
	}
}
