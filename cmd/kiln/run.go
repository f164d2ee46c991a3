package main

import (
	"fmt"
	"strconv"
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
		publish  []string
		opts     waitOptions
	)
	cmd := &cobra.Command{
		Use:   "run IMAGE [--name NAME] [--type TYPE | --cpus N --memory SIZE] [--count N] [--user-data FILE] [--volume DEVICE=SIZE]... [--publish [HOSTIP:]HOSTPORT:GUESTPORT[/PROTO]]... [--key-name NAME] [--tag K=V]... [--wait [--timeout DURATION]]",
		Short: "Launch instances of an image",
		Long: `Launch instances of an image (an ami- id or a name). Each gets a copy-on-write
volume per block device mapping (nothing of the image is copied), blank volumes for
--volume, a cloud-init NoCloud seed for --user-data, and a network card on QEMU's
user-mode network: outbound works where the host's does; the guest's port 22 is
forwarded from a loopback port of its own (kiln ps shows it), and --publish forwards
more (loopback unless an address is given, as docker's -p). Types: nano (1 vCPU, 256 MiB),
micro (1, 512 MiB; the default), small (1, 1 GiB), medium (2, 2 GiB), large (2, 4 GiB).
--wait waits until the instances are ready.

` + readyMeans + "\n\n" + waitTimeoutMeans,
		Args: exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			req.Image = args[0]
			if req.Count < 1 {
				return usageError{fmt.Errorf("--count %d: give 1 or more", req.Count)}
			}
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
			for _, p := range publish {
				port, err := parsePublish(p)
				if err != nil {
					return err
				}
				req.Publish = append(req.Publish, port)
			}
			if userData != "" {
				var err error
				if req.UserData, err = readFlagFile("--user-data", userData, api.MaxUserData); err != nil {
					return err
				}
			}
			c := e.client()
			insts, err := c.RunInstances(uncut(cmd.Context()), req)
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
	f.StringVar(&req.KeyName, "key-name", "", "a key pair of yours whose public key the guest gets (kiln key-pair)")
	f.Var(tagFlag{&req.Tags}, "tag", "tag each instance K=V (repeatable)")
	f.StringVar(&req.MetadataTokens, "metadata-tokens", "optional", "the metadata service's IMDSv2 tokens: optional or required")
	f.StringArrayVarP(&publish, "publish", "p", nil, "forward a host port: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp] (repeatable; loopback unless HOSTIP)")
	opts.addFlags(cmd, `the instances are ready (see "Ready" above)`, timeoutBoot)
	return cmd
}

// parsePublish parses docker's --publish syntax, [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp].
func parsePublish(s string) (api.Port, error) {
	bad := usageError{fmt.Errorf("--publish %q: want [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. 8080:80 or 0.0.0.0:8080:80/tcp", s)}
	spec, proto, _ := strings.Cut(s, "/")
	parts := strings.Split(spec, ":")
	var p api.Port
	switch len(parts) {
	case 2:
	case 3:
		p.HostIP, parts = parts[0], parts[1:]
	default:
		return p, bad
	}
	host, err1 := strconv.Atoi(parts[0])
	guest, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || proto != "" && proto != "tcp" && proto != "udp" {
		return p, bad
	}
	p.HostPort, p.GuestPort, p.Protocol = host, guest, proto
	return p, nil
}
