package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newImageExportCommand(e *env) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export IMAGE -o FILE.tar",
		Short: "Write an image as an OCI image layout tar",
		Long: `Write an image as an OCI image layout tar (oci-layout, index.json, blobs/sha256/…):
its manifest, config and layers exactly as stored, so every digest is kept. kiln
creates FILE.tar with your rights and hands it to kilnd, which writes into it; a
failed export removes the file it created. kiln image import FILE.tar reads it back,
on this machine or another. Whoever may launch an image may export it. Here -o names
the file (as docker save's); -q prints the manifest's digest only.`,
		Args: exactArgs(1, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE.tar is needed: the file to write the image into")
			}
			res, err := e.client().ExportImage(cmd.Context(), args[0], out)
			if err != nil {
				return err
			}
			if e.quiet {
				_, err = fmt.Fprintln(e.stdout, res.Digest)
			} else {
				_, err = fmt.Fprintf(e.stdout, "%s: exported to %s (manifest %s, %s)\n", res.ImageID, clean(out), res.Digest, humanBytes(res.Bytes))
			}
			return err
		},
	}
	// -o is the file here, as docker save's: this flag takes the name of kiln's -o
	// (table or json), which export does not print.
	cmd.Flags().StringVarP(&out, "output", "o", "", "the tar to write (created, or truncated)")
	return cmd
}
