package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImagePushCommand(e *env) *cobra.Command {
	var (
		f             registryFlags
		containerDisk bool
	)
	cmd := &cobra.Command{
		Use:   "push IMAGE REF [--containerdisk] [--ca-file FILE] [--plain-http] [--timeout D]",
		Short: "Push an image to an OCI registry, sending only the layers it lacks",
		Long: `Push an image to an OCI registry (REF: REGISTRY/REPOSITORY[:TAG], "latest" by
default). kilnd sends the image's manifest, config and layers as they are stored, each
only when the registry lacks it: an image made on top of one already pushed sends only
its new layers. The credential is yours (kiln registry login, or docker's), sent to
kilnd for this push only. kiln image pull REF on another machine brings it back.

--containerdisk pushes the root device instead as a KubeVirt containerDisk: an OCI
image of one layer holding its whole chain flattened into disk/disk.qcow2, which
KubeVirt (and any OCI tool) can use; kiln image pull does not take it back.`,
		Args: exactArgs(2, "IMAGE and REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := f.request(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			progress, end := transferBar(e, args[0])
			res, err := e.client().PushImage(ctx, args[0], api.PushImageRequest{Reference: args[1], ContainerDisk: containerDisk, Registry: reg}, progress)
			end(err == nil)
			if err != nil {
				if ctx.Err() == context.DeadlineExceeded {
					return fmt.Errorf("push %s: not done within %s (--timeout); it stopped", args[1], f.timeout)
				}
				return err
			}
			switch {
			case e.quiet:
				_, err = fmt.Fprintf(e.stdout, "%s@%s\n", res.Reference, res.Digest)
			case e.output == "json":
				err = printJSON(e.stdout, res)
			default:
				mounted := ""
				if res.BlobsMounted > 0 {
					mounted = fmt.Sprintf(", %d mounted from the repository it came from", res.BlobsMounted)
				}
				_, err = fmt.Fprintf(e.stdout, "%s: pushed to %s@%s (%d of %d blobs sent, %s; %d already there%s)\n",
					res.ImageID, clean(res.Reference), res.Digest, res.BlobsPushed, res.Blobs, humanBytes(res.BytesPushed), res.BlobsSkipped, mounted)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&containerDisk, "containerdisk", false, "push the root device as a KubeVirt containerDisk (disk/disk.qcow2 in one tar layer)")
	f.add(cmd, time.Hour)
	return cmd
}
