package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newVolumeCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, list, attach, detach and delete volumes",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newVolumeCreateCommand(e), newVolumeLsCommand(e), newVolumeInspectCommand(e),
		newVolumeRmCommand(e), newVolumeAttachCommand(e), newVolumeDetachCommand(e))
	return cmd
}

func printVolume(e *env, v api.Volume) error {
	switch {
	case e.quiet:
		_, err := fmt.Fprintln(e.stdout, v.ID)
		return err
	case e.output == "json":
		return printJSON(e.stdout, v)
	}
	return fields(e.stdout, append([][2]string{{"ID", v.ID}, {"Owner", v.OwnerID}, {"State", v.State},
		{"Size", strconv.FormatInt(v.SizeGiB, 10) + " GiB"}, {"Snapshot", v.SnapshotID},
		{"Instance", v.InstanceID}, {"Device", v.DeviceName}, {"Created", v.CreateTime.Local().Format("2006-01-02 15:04:05 MST")}},
		tagFields(v.Tags)...))
}

func newVolumeCreateCommand(e *env) *cobra.Command {
	var size, snapshot string
	var tags map[string]string
	cmd := &cobra.Command{
		Use:   "create --size SIZE | --snapshot SNAPSHOT [--size SIZE] [--tag K=V]...",
		Short: "Create a volume: blank, or from a snapshot (copy-on-write)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.CreateVolumeRequest{SnapshotID: snapshot, Tags: tags}
			if size != "" {
				n, err := parseSize(size)
				if err != nil {
					return err
				}
				req.SizeGiB = (n + 1<<30 - 1) >> 30
			}
			if size == "" && snapshot == "" {
				return usageError{fmt.Errorf("kiln volume create: give --size SIZE or --snapshot SNAPSHOT")}
			}
			v, err := e.client().CreateVolume(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printVolume(e, v)
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "size, e.g. 10G (whole GiB)")
	cmd.Flags().StringVar(&snapshot, "snapshot", "", "the snapshot to start from")
	cmd.Flags().Var(tagFlag{&tags}, "tag", "tag K=V (repeatable)")
	return cmd
}

func newVolumeLsCommand(e *env) *cobra.Command {
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your volumes",
		Long:    "List your volumes (an administrator: everyone's).\n" + filterHelp("volume-id", "status", "size (GiB)", "snapshot-id", "attachment.instance-id", "attachment.device"),
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().Volumes(cmd.Context(), filters...)
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, v := range list {
					fmt.Fprintln(e.stdout, v.ID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, len(list))
			for i, v := range list {
				rows[i] = []string{v.ID, v.State, strconv.FormatInt(v.SizeGiB, 10) + " GiB", v.SnapshotID, v.InstanceID, v.DeviceName}
			}
			return table(e.stdout, []string{"VOLUME ID", "STATE", "SIZE", "SNAPSHOT", "INSTANCE", "DEVICE"}, rows)
		},
	}
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter KEY=VALUE (repeatable)")
	return cmd
}

func newVolumeInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect VOLUME",
		Short: "Show a volume",
		Args:  exactArgs(1, "one VOLUME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := e.client().Volume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printVolume(e, v)
		},
	}
}

func newVolumeRmCommand(e *env) *cobra.Command {
	return newRemoveCommand(e, "rm VOLUME...", "Delete volumes (refused while attached)", "VOLUME", (*client.Client).DeleteVolume)
}

func newVolumeAttachCommand(e *env) *cobra.Command {
	var device string
	cmd := &cobra.Command{
		Use:   "attach VOLUME INSTANCE [--device /dev/vdX]",
		Short: "Attach a volume to an instance (hot-plugged into a running one)",
		Args:  exactArgs(2, "VOLUME and INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := e.client().AttachVolume(cmd.Context(), args[0], args[1], device)
			if err != nil {
				return err
			}
			return printVolume(e, v)
		},
	}
	cmd.Flags().StringVar(&device, "device", "", "device name (default: the first free /dev/vdX)")
	return cmd
}

func newVolumeDetachCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "detach VOLUME",
		Short: "Detach a volume from its instance",
		Args:  exactArgs(1, "one VOLUME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := e.client().DetachVolume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printVolume(e, v)
		},
	}
}
