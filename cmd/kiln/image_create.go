package main

import (
	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageCreateCommand(e *env) *cobra.Command {
	var (
		req  api.CreateImageRequest
		tags []string
		opts waitOptions
	)
	cmd := &cobra.Command{
		Use:   "create INSTANCE NAME [--no-reboot] [--description TEXT] [--tag K=V]... [--snapshot-tag K=V]... [--wait [--timeout DURATION]]",
		Short: "Create an image of an instance's volumes (only what it wrote is stored)",
		Long: `Create an image of an instance's volumes. A running instance is stopped cleanly,
captured and started again, as the cloud does by default; a stopped one is captured as
it is. With --no-reboot the instance never stops: all its disks get a new top in one
atomic QMP transaction and the frozen ones are captured (crash-consistent, as after a
power cut). Each volume becomes new layers on the image's layers holding only what the
instance wrote.

--wait waits until the image is available and, when the instance was stopped for it,
until the instance is back as it was: ready again if it was ready, else running.

` + readyMeans + "\n\n" + waitTimeoutMeans,
		Args: exactArgs(2, "INSTANCE and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			req.Name = args[1]
			var err error
			if req.Tags, err = parseKV(tags); err != nil {
				return err
			}
			c := e.client()
			// How the instance was, to wait for it to be so again after a restart.
			var before api.Instance
			if opts.wait && !req.NoReboot {
				if before, err = c.Instance(cmd.Context(), args[0]); err != nil {
					return err
				}
			}
			im, err := c.CreateImage(uncut(cmd.Context()), args[0], req)
			if err != nil {
				return err
			}
			if !opts.wait {
				return printImage(e, im)
			}
			if im, err = waitImageUntil(cmd.Context(), e, c, &opts, im, "being created from "+im.SourceInstanceID); err != nil {
				return err
			}
			if before.State == "running" { // stopped for the capture: wait for it to be back
				back := instanceWait{want: "running", doing: "starting again after " + im.ID + " was made of it"}
				if before.Ready {
					back.want = "ready"
				}
				if _, err := waitInstances(cmd.Context(), e, c, &opts, []api.Instance{before}, back); err != nil {
					return err
				}
			}
			return printImage(e, im)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&req.NoReboot, "no-reboot", false, "capture live, without stopping the instance (crash-consistent)")
	f.StringVar(&req.Description, "description", "", "description")
	f.StringArrayVar(&tags, "tag", nil, "tag K=V (repeatable)")
	f.Var(tagFlag{&req.SnapshotTags}, "snapshot-tag", "tag the snapshots made K=V (repeatable)")
	opts.addFlags(cmd, "the image is available and the instance back as it was", timeoutImage)
	return cmd
}
