package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newRunCommand(e *env) *cobra.Command {
	var (
		req      api.RunInstancesRequest
		cpus     int
		memory   string
		userData string
		vols     []string
		opts     waitOptions
	)
	cmd := &cobra.Command{
		Use:   "run IMAGE [--name NAME] [--type TYPE | --cpus N --memory SIZE] [--count N] [--user-data FILE] [--volume DEVICE=SIZE]... [--wait [--timeout DURATION]]",
		Short: "Launch instances of an image",
		Long: `Launch instances of an image (an ami- id or a name). Each gets a copy-on-write
volume per block device mapping (nothing of the image is copied), blank volumes for
--volume, and a cloud-init NoCloud seed for --user-data. Types: nano (1 vCPU, 256 MiB),
micro (1, 512 MiB; the default), small (1, 1 GiB), medium (2, 2 GiB), large (2, 4 GiB).
--wait waits until the instances are ready.

` + readyMeans + "\n\n" + waitTimeoutMeans,
		Args: exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			req.Image = args[0]
			if cmd.Flags().Changed("cpus") {
				req.CPUs = &cpus
			}
			if cmd.Flags().Changed("memory") {
				n, err := parseSize(memory)
				if err != nil {
					return err
				}
				if !strings.ContainsAny(strings.ToUpper(memory), "KMGT") {
					n <<= 20 // a bare number is MiB
				}
				mib := int(n >> 20)
				req.MemoryMiB = &mib
			}
			for _, v := range vols {
				dev, sz, ok := strings.Cut(v, "=")
				n, err := parseSize(sz)
				if !ok || err != nil {
					return usageError{fmt.Errorf("--volume %q: want DEVICE=SIZE, e.g. /dev/vdb=10G", v)}
				}
				req.Volumes = append(req.Volumes, api.VolumeSpec{DeviceName: dev, SizeGiB: (n + 1<<30 - 1) >> 30})
			}
			if userData != "" {
				st, err := os.Stat(userData)
				if err != nil {
					return err
				}
				if st.Size() > api.MaxUserData {
					return fmt.Errorf("user data %s is %s; at most %s", userData, humanBytes(st.Size()), humanBytes(api.MaxUserData))
				}
				if req.UserData, err = os.ReadFile(userData); err != nil {
					return err
				}
			}
			c := e.client()
			insts, err := c.RunInstances(cmd.Context(), req)
			if err != nil {
				return err
			}
			if opts.wait {
				done, err := waitInstances(cmd.Context(), e, c, &opts, insts, instanceWait{want: "ready", doing: "starting"})
				if err != nil {
					return err
				}
				insts = done
			}
			return printInstances(e, insts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "instance name (with --count N: NAME-1 ... NAME-N)")
	f.StringVar(&req.InstanceType, "type", "", "instance type: nano, micro, small, medium, large")
	f.IntVar(&cpus, "cpus", 0, "vCPUs (instead of --type)")
	f.StringVar(&memory, "memory", "", "memory, e.g. 512M or 2G; a bare number is MiB (instead of --type)")
	f.IntVar(&req.Count, "count", 1, "how many instances")
	f.StringVar(&userData, "user-data", "", "user data FILE (a #! script runs at boot)")
	f.StringArrayVar(&vols, "volume", nil, "blank volume DEVICE=SIZE (repeatable)")
	opts.addFlags(cmd, `the instances are ready (see "Ready" above)`, timeoutBoot)
	return cmd
}
