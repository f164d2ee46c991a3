package main

import (
	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageCreateCommand(e *env) *cobra.Command {
	var (
		req  api.CreateImageRequest
		tags []string
		wait bool
	)
	cmd := &cobra.Command{
		Use:   "create INSTANCE NAME [--description TEXT] [--tag K=V]... [--wait]",
		Short: "Create an image of an instance's volumes (only what it wrote is stored)",
		Long: `Create an image of an instance's volumes. A running instance is stopped cleanly,
captured and started again, as the cloud does by default; a stopped one is captured as
it is. With --no-reboot the instance never stops: all its disks get a new top in one
atomic QMP transaction and the frozen ones are captured (crash-consistent, as after a
power cut). Each volume becomes new layers on the image's layers holding only what the
instance wrote.`,
		Args: exactArgs(2, "INSTANCE and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[1]
			var err error
			if req.Tags, err = parseKV(tags); err != nil {
				return err
			}
			c := e.client()
			im, err := c.CreateImage(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if wait {
				if im, err = waitImage(cmd.Context(), e, c, im); err != nil {
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
	f.BoolVar(&wait, "wait", false, "wait until the image is available")
	return cmd
}
