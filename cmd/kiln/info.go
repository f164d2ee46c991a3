package main

import (
	"strconv"

	"github.com/spf13/cobra"
)

func newInfoCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the daemon's version, accelerator (kvm|tcg), root and counts",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := e.client().Info(cmd.Context())
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.stdout, info)
			}
			return fields(e.stdout, [][2]string{
				{"Version", info.Version},
				{"Accelerator", info.Accelerator},
				{"Accelerator reason", info.AcceleratorReason},
				{"Instance units", info.InstanceUnits},
				{"Network", info.Network},
				{"Root", info.Root},
				{"Socket", info.Socket},
				{"Images", strconv.Itoa(info.Images)},
				{"Snapshots", strconv.Itoa(info.Snapshots)},
				{"Instances", strconv.Itoa(info.Instances)},
			})
		},
	}
}
