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
			ec2 := "off (kilnd --ec2-listen ADDRESS)"
			if info.EC2Endpoint != "" {
				ec2 = info.EC2Endpoint + " (region " + info.EC2Region + ")"
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
				{"EC2 endpoint", ec2},
			})
		},
	}
}
