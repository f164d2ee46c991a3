package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newSnapshotCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "List, inspect and delete snapshots",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSnapshotLsCommand(e), newSnapshotInspectCommand(e), newSnapshotRmCommand(e), newSnapshotRestoreCommand(e))
	return cmd
}

func newSnapshotLsCommand(e *env) *cobra.Command {
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your snapshots",
		Long:    "List your snapshots (an administrator: everyone's).\n" + filterHelp("snapshot-id", "owner-id", "volume-size (GiB)", "description"),
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().Snapshots(cmd.Context(), filters...)
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, sn := range list {
					fmt.Fprintln(e.stdout, sn.ID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, len(list))
			for i, sn := range list {
				rows[i] = []string{sn.ID, strconv.FormatInt(sn.VolumeSize, 10) + " GiB", humanBytes(sn.StorageSize),
					strconv.Itoa(len(sn.Chain)), sn.ImageID, ago(sn.StartTime)}
			}
			return table(e.stdout, []string{"SNAPSHOT ID", "SIZE", "STORED", "LAYERS", "MADE FOR", "CREATED"}, rows)
		},
	}
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter KEY=VALUE (repeatable)")
	return cmd
}

func printSnapshot(e *env, sn api.Snapshot) error {
	if e.output == "json" {
		return printJSON(e.stdout, sn)
	}
	return fields(e.stdout, append([][2]string{
		{"ID", sn.ID}, {"Owner", sn.OwnerID}, {"Description", sn.Description},
		{"Volume size", strconv.FormatInt(sn.VolumeSize, 10) + " GiB"}, {"Stored", humanBytes(sn.StorageSize)},
		{"Layer", sn.Layer}, {"Chain", strings.Join(sn.Chain, " ← ")}, {"Made for", sn.ImageID},
		{"Created", sn.StartTime.Local().Format("2006-01-02 15:04:05 MST")},
	}, tagFields(sn.Tags)...))
}

func newSnapshotInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect SNAPSHOT",
		Short: "Show a snapshot",
		Args:  exactArgs(1, "one SNAPSHOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := e.client().Snapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printSnapshot(e, sn)
		},
	}
}

func newSnapshotRmCommand(e *env) *cobra.Command {
	return newRemoveCommand(e, "rm SNAPSHOT...", "Delete snapshots (refused while an image uses one)", "SNAPSHOT", binNote(e, "snapshot", (*client.Client).DeleteSnapshotBin))
}

func newSnapshotRestoreCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "restore SNAPSHOT",
		Short: "Restore a snapshot from the recycle bin",
		Args:  exactArgs(1, "one SNAPSHOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := e.client().RestoreSnapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if e.quiet {
				_, err := fmt.Fprintln(e.stdout, sn.ID)
				return err
			}
			return printSnapshot(e, sn)
		},
	}
}
