package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newGCCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Delete stored content that no image, snapshot or volume references",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := e.client().GC(cmd.Context())
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.stdout, res)
			}
			_, err = fmt.Fprintf(e.stdout, "removed %d blobs and %d abandoned ingests, freed %s\n",
				res.BlobsRemoved, res.IngestsRemoved, humanBytes(res.BytesFreed))
			return err
		},
	}
}
