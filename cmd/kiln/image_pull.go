package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImagePullCommand(e *env) *cobra.Command {
	var (
		f    registryFlags
		req  api.PullImageRequest
		tags []string
	)
	cmd := &cobra.Command{
		Use:   "pull REF [--name NAME] [--description TEXT] [--tag K=V]... [--ca-file FILE] [--plain-http] [--timeout D]",
		Short: "Pull an image from an OCI registry (one kiln image push sent)",
		Long: `Pull an image that kiln image push sent to an OCI registry (REF:
REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]). kilnd fetches only the layers its store
lacks, verifies every byte against its digest and size while it arrives, and checks
each layer as a registered disk is checked before it keeps it; the image is yours,
available, once all of it is in. A pull that fails leaves no image. The name is
--name, else the repository's last part and the tag (web-v1).`,
		Args: exactArgs(1, "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Tags, err = parseKV(tags); err != nil {
				return err
			}
			if req.Registry, err = f.request(cmd.Context(), args[0]); err != nil {
				return err
			}
			req.Reference = args[0]
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			progress, end := transferBar(e, args[0])
			im, err := e.client().PullImage(ctx, req, progress)
			end(err == nil)
			if err != nil {
				if ctx.Err() == context.DeadlineExceeded {
					return fmt.Errorf("pull %s: not done within %s (--timeout); it stopped and left nothing", args[0], f.timeout)
				}
				return err
			}
			return confirmImage(e, im, fmt.Sprintf("%s, pulled from %s", im.State, sourceOf(im)))
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "the image's name (default: the repository's last part and the tag)")
	cmd.Flags().StringVar(&req.Description, "description", "", "description")
	cmd.Flags().StringArrayVar(&tags, "tag", nil, "tag K=V (repeatable)")
	f.add(cmd, time.Hour)
	return cmd
}

// sourceOf is where a pulled image came from, with the manifest's digest there.
func sourceOf(im api.Image) string {
	if strings.Contains(im.SourceRef, "@") || im.SourceDigest == "" {
		return im.SourceRef
	}
	return im.SourceRef + "@" + im.SourceDigest
}
