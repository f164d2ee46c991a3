package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newImageRegisterCommand(e *env) *cobra.Command {
	var (
		req   api.RegisterImageRequest
		disks []string
		tags  []string
		opts  waitOptions
	)
	cmd := &cobra.Command{
		Use:   "register NAME --disk FILE[,format=qcow2|raw|vmdk|vhdx][,device=/dev/vda][,force-raw]... [--wait [--timeout DURATION]]",
		Short: "Register an image from disk files (and optionally a kernel and initrd)",
		Long: `Register an image from disk files. Each disk is checked (its format is the one
given, qcow2 by default, never guessed), converted to a qcow2 layer and stored once
however often it is registered. A disk whose first bytes are another format's header
than the one given (a qcow2 file given as raw, say) is refused with the format it looks
like; force-raw takes a disk given as raw as raw all the same (a raw disk that holds
such a header by design). The image is pending until its layers are stored; --wait
waits for it to be available.

` + waitTimeoutMeans,
		Args: exactArgs(1, "one image NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			req.Name = args[0]
			for _, spec := range disks {
				d, err := splitDisk(spec)
				if err != nil {
					return err
				}
				if d.Name, err = filepath.Abs(d.Name); err != nil {
					return err
				}
				req.Disks = append(req.Disks, d)
			}
			if len(req.Disks) == 0 {
				return usageError{fmt.Errorf("kiln image register: at least one --disk FILE is needed")}
			}
			for _, p := range []*string{&req.Kernel, &req.Initrd, &req.UEFIData} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			var err error
			if req.Tags, err = parseKV(tags); err != nil {
				return err
			}
			c := e.client()
			im, err := c.RegisterImage(cmd.Context(), req)
			if err != nil {
				return err
			}
			if opts.wait {
				if im, err = waitImageUntil(cmd.Context(), e, c, &opts, im, "being registered"); err != nil {
					return err
				}
			}
			return printImage(e, im)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&disks, "disk", nil, "disk FILE[,format=qcow2|raw|vmdk|vhdx][,device=/dev/vdX][,force-raw] (repeatable; the first is the root device)")
	f.StringVar(&req.Kernel, "kernel", "", "kernel FILE to boot directly")
	f.StringVar(&req.Initrd, "initrd", "", "initrd FILE for the kernel")
	f.StringVar(&req.Cmdline, "cmdline", "", "kernel command line")
	f.StringVar(&req.SSHUser, "ssh-user", "", "the user kiln ssh logs in as (default: the one cloud-init names)")
	f.StringVar(&req.Architecture, "arch", "x86_64", "architecture: x86_64 or arm64")
	f.StringVar(&req.BootMode, "boot-mode", "legacy-bios", "boot mode: legacy-bios, uefi or uefi-preferred (UEFI: OVMF)")
	f.StringVar(&req.UEFIData, "uefi-data", "", "UEFI variable store FILE instances start with (an OVMF_VARS_4M.fd-sized flash image, e.g. an instance's uefi-vars.fd)")
	f.BoolVar(&req.SecureBoot, "secure-boot", false, "boot instances with UEFI Secure Boot enforced (Microsoft's keys unless --uefi-data brings others)")
	f.StringVar(&req.TPMSupport, "tpm-support", "", "give instances a virtual TPM: v2.0")
	f.StringVar(&req.RootDeviceType, "root-device-type", "ebs", "root device type: ebs or instance-store")
	f.StringVar(&req.Description, "description", "", "description")
	f.StringArrayVar(&tags, "tag", nil, "tag K=V (repeatable)")
	opts.addFlags(cmd, "the image is available", timeoutImage)
	return cmd
}
