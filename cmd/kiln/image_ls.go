package main

import (
	"github.com/spf13/cobra"

	"kiln/daemon/client"
)

func newImageLsCommand(e *env) *cobra.Command {
	var opts client.ListImagesOptions
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images you can use",
		Long: `List the images you can use: your own and public ones.
Filters (KEY=VALUE, * and ? as wildcards; the same key twice means either value):
name, image-id, state, architecture, owner-id, root-device-type, root-device-name,
boot-mode, is-public, description, tag:KEY, tag-key, block-device-mapping.snapshot-id,
block-device-mapping.device-name.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().Images(cmd.Context(), opts)
			if err != nil {
				return err
			}
			return printImages(e, list)
		},
	}
	cmd.Flags().StringArrayVar(&opts.Filters, "filter", nil, "filter KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&opts.Owner, "owner", "", "only images of this owner: self or a user name")
	cmd.Flags().BoolVar(&opts.IncludeDeprecated, "include-deprecated", false, "also list others' deprecated images (yours are always listed)")
	cmd.Flags().BoolVar(&opts.IncludeDisabled, "include-disabled", false, "also list your disabled images")
	return cmd
}
