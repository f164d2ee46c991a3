package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newImageCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Register, list, inspect, tag and deregister machine images",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newImageRegisterCommand(e),
		newImageCreateCommand(e),
		newImageCopyCommand(e),
		newImageLsCommand(e),
		newImageInspectCommand(e),
		newImageTagCommand(e),
		newImageUntagCommand(e),
		newImageShareCommand(e, true),
		newImageShareCommand(e, false),
		newImageDeregisterCommand(e),
		newImagePushCommand(e), newImagePullCommand(e),
		newImageExportCommand(e), newImageImportCommand(e),
		newImageDeprecateCommand(e), newImageDisableCommand(e), newImageEnableCommand(e),
		newImageProtectCommand(e), newImageUnprotectCommand(e), newImageRestoreCommand(e),
	)
	return cmd
}

// printImages prints images as e's output asks: ids, JSON list or a table.
func printImages(e *env, list []api.Image) error {
	switch {
	case e.quiet:
		for _, im := range list {
			fmt.Fprintln(e.stdout, im.ID)
		}
		return nil
	case e.output == "json":
		if list == nil {
			list = []api.Image{}
		}
		return printJSON(e.stdout, list)
	}
	rows := make([][]string, len(list))
	for i, im := range list {
		rows[i] = []string{im.ID, im.Name, im.State, im.Architecture, im.RootDeviceType, im.OwnerID, ago(im.CreationDate)}
	}
	return table(e.stdout, []string{"IMAGE ID", "NAME", "STATE", "ARCH", "ROOT", "OWNER", "CREATED"}, rows)
}

// printImage prints one image as e's output asks.
func printImage(e *env, im api.Image) error {
	switch {
	case e.quiet:
		_, err := fmt.Fprintln(e.stdout, im.ID)
		return err
	case e.output == "json":
		return printJSON(e.stdout, im)
	}
	kv := [][2]string{
		{"ID", im.ID},
		{"Name", im.Name},
		{"Owner", im.OwnerID},
		{"State", im.State},
	}
	if im.StateReason != "" {
		kv = append(kv, [2]string{"State reason", im.StateReason})
	}
	kv = append(kv,
		[2]string{"Description", im.Description},
		[2]string{"Architecture", im.Architecture},
		[2]string{"Boot mode", im.BootMode},
		[2]string{"Root device", im.RootDeviceName + " (" + im.RootDeviceType + ")"},
		[2]string{"SSH user", orNone(im.SSHUser)},
		[2]string{"Public", fmt.Sprint(im.Public)},
		[2]string{"Created", im.CreationDate.Local().Format("2006-01-02 15:04:05 MST")},
	)
	if im.DeprecationTime != nil {
		kv = append(kv, [2]string{"Deprecation", when(*im.DeprecationTime)})
	}
	if im.DeregistrationProtection != "" {
		kv = append(kv, [2]string{"Deregistration protection", im.DeregistrationProtection})
	}
	if im.Kernel != "" {
		kv = append(kv, [2]string{"Kernel", im.Kernel}, [2]string{"Initrd", im.Initrd}, [2]string{"Cmdline", im.Cmdline})
	}
	if lp := im.LaunchPermission; lp != nil {
		kv = append(kv, [2]string{"Shared with users", orNone(strings.Join(lp.Users, ", "))},
			[2]string{"Shared with groups", orNone(strings.Join(lp.Groups, ", "))})
	}
	for _, m := range im.BlockDeviceMappings {
		v := "(no volume)"
		if m.EBS != nil {
			v = fmt.Sprintf("%s, %d GiB, delete on termination: %v", m.EBS.SnapshotID, m.EBS.VolumeSize, m.EBS.DeleteOnTermination)
		}
		kv = append(kv, [2]string{"Device " + m.DeviceName, v})
	}
	kv = append(kv, tagFields(im.Tags)...)
	if t := im.LastLaunchedTime; t != nil {
		kv = append(kv, [2]string{"Last launched", t.Local().Format("2006-01-02 15:04:05 MST")})
	}
	for _, l := range [][2]string{{"Source instance", im.SourceInstanceID}, {"Source image", im.SourceImageID}, {"Copied from", im.CopiedFromID}, {"Source", im.SourceRef}, {"Source digest", im.SourceDigest}} {
		if l[1] != "" {
			kv = append(kv, l)
		}
	}
	for _, cp := range im.Copies {
		v := cp.ID + " (" + cp.OwnerID
		if cp.Public {
			v += ", public"
		}
		kv = append(kv, [2]string{"Copied by others", v + ")"})
	}
	if im.ManifestDigest != "" {
		kv = append(kv, [2]string{"Manifest", im.ManifestDigest})
	}
	return fields(e.stdout, kv)
}

// waitImage waits for an image being made, with a progress bar on a terminal (not with
// -q) that ends in a line that stays.
func waitImage(ctx context.Context, e *env, c *client.Client, im api.Image) (api.Image, error) {
	if !isTerminal(e.stderr) || e.quiet {
		return c.WaitImage(ctx, im.ID, nil)
	}
	b := newBar(e.stderr, im.ID)
	b.update(im.Progress)
	got, err := c.WaitImage(ctx, im.ID, func(cur api.Image) {
		if cur.State == "pending" {
			b.update(cur.Progress)
		}
	})
	b.end(err == nil && got.State == "available")
	return got, err
}

// splitDisk parses --disk FILE[,format=F][,device=D][,force-raw].
func splitDisk(spec string) (api.Disk, error) {
	parts := strings.Split(spec, ",")
	d := api.Disk{Name: parts[0], Format: "qcow2"}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "format":
			d.Format = v
		case "device":
			d.DeviceName = v
		case "force-raw":
			if v != "" {
				return d, usageError{fmt.Errorf("--disk %q: force-raw takes no value", spec)}
			}
			d.ForceRaw = true
		default:
			return d, usageError{fmt.Errorf("--disk %q: unknown option %q (want format=, device= or force-raw)", spec, k)}
		}
	}
	if d.Name == "" {
		return d, usageError{fmt.Errorf("--disk %q: no file", spec)}
	}
	if d.ForceRaw && d.Format != "raw" {
		return d, usageError{fmt.Errorf("--disk %q: force-raw is for a raw disk: add format=raw", spec)}
	}
	return d, nil
}
