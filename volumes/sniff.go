package volumes

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
)

// Lookalike is a disk format whose signature a file holds where that format keeps it:
// what a file given as another format looks like.
type Lookalike struct {
	Format string // qemu-img's name of the format: qcow2, qcow, qed, vmdk, vhdx, vdi, vpc, luks
	What   string // the signature found, for messages: `a qcow2 header ("QFI\xfb")`
	// Descriptor marks a VMDK descriptor: a text file naming other files, taken by
	// kiln in no format.
	Descriptor bool
}

// Signatures at the start of a file (QEMU's block/*.c probes and the formats' specs).
const (
	sigQCOW  = "QFI\xfb"               // qcow2 and qcow (version 1)
	sigQED   = "QED\x00"               // block/qed.h QED_MAGIC
	sigVHDX  = "vhdxfile"              // the VHDX file type identifier
	sigVPC   = "conectix"              // the VHD footer's cookie (copied at the start of a dynamic VHD)
	sigLUKS  = "LUKS\xba\xbe"          // LUKS1 and LUKS2 headers
	sigVMDKD = "# Disk DescriptorFile" // the first line of a VMDK descriptor as qemu-img and VMware write it
	vdiOff   = 0x40                    // the VDI signature's offset (0xbeda107f, little-endian)
	sigVDI   = "\x7f\x10\xda\xbe"
	vpcFoot  = 512                  // a fixed VHD is the disk followed by a 512-byte footer
	headLen  = vdiOff + len(sigVDI) // the bytes of the start Sniff reads
)

// Sniff reports which known disk format's signature the file r (of size bytes) holds,
// if any (a zero Lookalike when none). It reads the first bytes and, for a fixed VHD's footer, the last 512. It is
// a check of what the caller says, never a probe: kiln reads a disk only in the format
// it is given (Formats).
func Sniff(r io.ReaderAt, size int64) (Lookalike, error) {
	head := make([]byte, headLen)
	n, err := r.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return Lookalike{}, err
	}
	head = head[:n]
	has := func(sig string) bool { return bytes.HasPrefix(head, []byte(sig)) }
	switch {
	case has(sigQCOW):
		if len(head) >= 8 && binary.BigEndian.Uint32(head[4:]) == 1 {
			return Lookalike{Format: "qcow", What: `a qcow (version 1) header ("QFI\xfb")`}, nil
		}
		return Lookalike{Format: "qcow2", What: `a qcow2 header ("QFI\xfb")`}, nil
	case has(sigQED):
		return Lookalike{Format: "qed", What: `a QED header ("QED\x00")`}, nil
	case has(vmdk4Magic), has(vmdk3Magic):
		return Lookalike{Format: "vmdk", What: fmt.Sprintf("a VMDK sparse extent header (%q)", head[:4])}, nil
	case has(sigVMDKD):
		return Lookalike{Format: "vmdk", What: fmt.Sprintf("a VMDK descriptor (%q)", sigVMDKD), Descriptor: true}, nil
	case has(sigVHDX):
		return Lookalike{Format: "vhdx", What: fmt.Sprintf("a VHDX header (%q)", sigVHDX)}, nil
	case has(sigVPC):
		return Lookalike{Format: "vpc", What: fmt.Sprintf("a dynamic VHD header (%q)", sigVPC)}, nil
	case has(sigLUKS):
		return Lookalike{Format: "luks", What: `a LUKS header ("LUKS\xba\xbe")`}, nil
	case len(head) >= vdiOff+len(sigVDI) && string(head[vdiOff:vdiOff+len(sigVDI)]) == sigVDI:
		return Lookalike{Format: "vdi", What: "a VirtualBox VDI header (signature 0xbeda107f at byte 64)"}, nil
	}
	if size >= vpcFoot {
		foot := make([]byte, len(sigVPC))
		if _, err := r.ReadAt(foot, size-vpcFoot); err != nil && err != io.EOF {
			return Lookalike{}, err
		}
		if string(foot) == sigVPC {
			return Lookalike{Format: "vpc", What: fmt.Sprintf("a fixed VHD footer (%q in its last 512 bytes)", sigVPC)}, nil
		}
	}
	return Lookalike{}, nil
}

// CheckLooks refuses a disk given as format whose bytes say it is another format (l,
// from Sniff), with what it looks like and how to give it. forceRaw (format raw only)
// takes the file as raw whatever its first bytes hold: a raw disk whose guest wrote
// another format's header at its start. The error wraps errdefs.ErrInvalidArgument.
func CheckLooks(name, format string, forceRaw bool, l Lookalike) error {
	if l.Format == "" || forceRaw && format == "raw" {
		return nil
	}
	if l.Format == format && !l.Descriptor {
		return nil
	}
	var fix string
	switch {
	case l.Descriptor && format == "vmdk":
		return nil // precheck refuses a descriptor given as vmdk with its own message
	case l.Descriptor:
		fix = "a descriptor names other files, which kiln never opens: convert the disk to one file first " +
			"(qemu-img convert -f vmdk -O qcow2 DESCRIPTOR OUT), then --disk OUT,format=qcow2"
	case l.Format == "luks":
		fix = "it is encrypted, and kiln keeps disks unencrypted: decrypt it first " +
			"(qemu-img convert --object secret,id=k,file=KEYFILE --image-opts driver=luks,file.filename=IN,key-secret=k -O qcow2 OUT), then --disk OUT,format=qcow2"
	case ValidFormat(l.Format):
		fix = fmt.Sprintf("give its format: --disk %s,format=%s", name, l.Format)
	default:
		fix = fmt.Sprintf("kiln does not take %s disks: convert it first (qemu-img convert -f %s -O qcow2 IN OUT), then --disk OUT,format=qcow2",
			l.Format, l.Format)
	}
	if format == "raw" {
		fix += fmt.Sprintf("; or, if it is a raw disk whose bytes hold that header by design, --disk %s,format=raw,force-raw", name)
	}
	return fmt.Errorf("disk %s is given as %s but holds %s: %s: %w", name, format, l.What, fix, errdefs.ErrInvalidArgument)
}
