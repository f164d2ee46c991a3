package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newInstanceCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "instance",
		Short: "List and inspect instances",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newInstanceLsCommand(e, "ls"), newInstanceInspectCommand(e))
	return cmd
}

// printInstances prints instances as e's output asks.
func printInstances(e *env, list []api.Instance) error {
	switch {
	case e.quiet:
		for _, inst := range list {
			fmt.Fprintln(e.stdout, inst.ID)
		}
		return nil
	case e.output == "json":
		if list == nil {
			list = []api.Instance{}
		}
		return printJSON(e.stdout, list)
	}
	rows := make([][]string, len(list))
	for i, inst := range list {
		rows[i] = []string{inst.ID, inst.Name, inst.ImageID, inst.State, inst.InstanceType,
			strconv.Itoa(inst.CPUs), strconv.Itoa(inst.MemoryMiB) + " MiB", inst.Accelerator, ago(inst.LaunchTime), ports(inst.Ports)}
	}
	return table(e.stdout, []string{"INSTANCE ID", "NAME", "IMAGE", "STATE", "TYPE", "CPUS", "MEMORY", "ACCEL", "LAUNCHED", "PORTS"}, rows)
}

func printInstance(e *env, inst api.Instance) error {
	switch {
	case e.quiet:
		_, err := fmt.Fprintln(e.stdout, inst.ID)
		return err
	case e.output == "json":
		return printJSON(e.stdout, inst)
	}
	kv := [][2]string{
		{"ID", inst.ID}, {"Name", inst.Name}, {"Image", inst.ImageID}, {"Owner", inst.OwnerID}, {"State", inst.State},
	}
	if inst.StateReason != "" {
		kv = append(kv, [2]string{"State reason", inst.StateReason})
	}
	kv = append(kv,
		[2]string{"Type", inst.InstanceType},
		[2]string{"CPUs", strconv.Itoa(inst.CPUs)},
		[2]string{"Memory", strconv.Itoa(inst.MemoryMiB) + " MiB"},
		[2]string{"Accelerator", inst.Accelerator},
		[2]string{"Root device", inst.RootDeviceName + " (" + inst.RootDeviceType + ")"},
		[2]string{"Launched", inst.LaunchTime.Local().Format("2006-01-02 15:04:05 MST")},
		[2]string{"Ready", strconv.FormatBool(inst.Ready)},
	)
	if len(inst.Ports) > 0 {
		kv = append(kv, [2]string{"Ports", ports(inst.Ports)})
	}
	if inst.KeyName != "" {
		kv = append(kv, [2]string{"Key pair", inst.KeyName})
	}
	if inst.SSHUser != "" {
		kv = append(kv, [2]string{"SSH user", inst.SSHUser})
	}
	kv = append(kv, [2]string{"Metadata tokens", inst.MetadataTokens})
	if inst.PID != 0 {
		kv = append(kv, [2]string{"QEMU pid", strconv.Itoa(inst.PID)})
	}
	for _, m := range inst.BlockDeviceMappings {
		kv = append(kv, [2]string{"Device " + m.DeviceName, fmt.Sprintf("%s, delete on termination: %v", m.VolumeID, m.DeleteOnTermination)})
	}
	return fields(e.stdout, append(kv, tagFields(inst.Tags)...))
}

func newInstanceLsCommand(e *env, use string) *cobra.Command {
	var all bool
	var filters []string
	cmd := &cobra.Command{
		Use:     use,
		Aliases: []string{"list"},
		Short:   "List your instances (-a: also terminated ones)",
		Long: "List your instances (an administrator: everyone's); terminated ones with -a, or with\n" +
			"a filter on instance-state-name.\n" + filterHelp("instance-id", "instance-state-name", "image-id", "instance-type", "owner-id", "key-name"),
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().Instances(cmd.Context(), all, filters...)
			if err != nil {
				return err
			}
			return printInstances(e, list)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "also list terminated instances")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter KEY=VALUE (repeatable)")
	return cmd
}

func newInstanceInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect INSTANCE",
		Short: "Show an instance (INSTANCE is an i- id or a name)",
		Args:  exactArgs(1, "one INSTANCE (an i- id or a name)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := e.client().Instance(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printInstance(e, inst)
		},
	}
}

// ports shows forwarded ports as docker does: 127.0.0.1:42200->22/tcp, ...
func ports(ps []api.Port) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.GuestPort, p.Protocol)
	}
	return strings.Join(out, ", ")
}
