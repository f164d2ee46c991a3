package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageImportCommand(e *env) *cobra.Command {
	var (
		req     api.ImportImageRequest
		tags    []string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "import FILE.tar [--name NAME] [--description TEXT] [--tag K=V]... [--timeout D]",
		Short: "Read an image from an OCI image layout tar (one kiln image export wrote)",
		Long: `Read a kiln image from an OCI image layout tar (kiln image export wrote it, or
another OCI tool copied a kiln image into one). kiln opens FILE.tar with your rights
and hands it to kilnd, which gives it the checks a pull gives a registry's bytes:
every blob verified against its digest and size, every layer checked as a registered
disk is; the image is yours, available, once all of it is in. An import that fails
leaves no image. The name is --name, else the file's name without .tar.`,
		Args: exactArgs(1, "FILE.tar"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Tags, err = parseKV(tags); err != nil {
				return err
			}
			if req.Name == "" {
				req.Name = strings.TrimSuffix(filepath.Base(args[0]), ".tar")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			progress, end := transferBar(e, filepath.Base(args[0]))
			im, err := e.client().ImportImage(ctx, args[0], req, progress)
			end(err == nil)
			if err != nil {
				if ctx.Err() == context.DeadlineExceeded {
					return fmt.Errorf("import %s: not done within %s (--timeout); it stopped and left nothing", args[0], timeout)
				}
				return err
			}
			return confirmImage(e, im, fmt.Sprintf("%s, imported from %s (manifest %s)", im.State, args[0], im.SourceDigest))
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "the image's name (default: the file's name without .tar)")
	cmd.Flags().StringVar(&req.Description, "description", "", "description")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "tag K=V (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}
