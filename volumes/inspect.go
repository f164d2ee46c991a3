package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// Formats kiln accepts for disk files. The format is always given by the caller; kiln
// never probes it, because a raw disk whose guest wrote a qcow2 header would otherwise
// be read as qcow2 and could name a host file as its backing file.
var Formats = []string{"qcow2", "raw", "vmdk", "vhdx"}

// ValidFormat reports whether f is one of Formats.
func ValidFormat(f string) bool {
	for _, x := range Formats {
		if f == x {
			return true
		}
	}
	return false
}

// Source is a disk file a caller gives: the file it opened with its own rights (kiln
// never opens a caller's path itself), the name it knows the file by (for messages
// only) and its format.
type Source struct {
	File   *os.File
	Name   string
	Format string
	// ForceRaw takes a disk given as raw as raw even when its bytes hold another
	// format's header (Sniff); without it such a disk is refused.
	ForceRaw bool
}

// Info is what kiln knows of a checked disk file.
type Info struct {
	Source
	VirtualSize int64 // bytes the guest sees
	ActualSize  int64 // bytes the file takes on the host
}

// sourceArg is how qemu-img is told to read a Source: the file is its first extra
// descriptor.
const sourceArg = "/dev/fd/3"

// qemuInfo is the part of `qemu-img info --output=json` kiln reads.
type qemuInfo struct {
	Filename            string `json:"filename"`
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ActualSize          int64  `json:"actual-size"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	FormatSpecific      struct {
		Type string `json:"type"`
		Data struct {
			DataFile   string `json:"data-file"`
			CreateType string `json:"create-type"`
			Extents    []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// ParseInfo decodes `qemu-img info --output=json` and refuses what kiln must not use:
// a backing file, an external data file, VMDK extents in other files. opened is the
// path qemu-img was given, path the file's name in messages. Errors wrap
// errdefs.ErrInvalidArgument.
func ParseInfo(out []byte, opened, path, format string) (Info, error) {
	return parseInfo(out, opened, path, format, "")
}

// parseInfo is ParseInfo allowing one backing file name: backing, when not empty (a
// layer's parent, which CheckLayer has already checked in the header).
func parseInfo(out []byte, opened, path, format, backing string) (Info, error) {
	var qi qemuInfo
	if err := json.Unmarshal(out, &qi); err != nil {
		return Info{}, fmt.Errorf("qemu-img info output: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case qi.Format != format:
		return Info{}, fmt.Errorf("disk %s is %q, not %q: %w", path, qi.Format, format, errdefs.ErrInvalidArgument)
	case backing != "" && qi.BackingFilename != backing:
		return Info{}, fmt.Errorf("disk %s has backing file %q, not %q: %w", path, qi.BackingFilename, backing, errdefs.ErrInvalidArgument)
	case backing == "" && (qi.BackingFilename != "" || qi.FullBackingFilename != ""):
		return Info{}, fmt.Errorf("disk %s has a backing file %q; flatten it first (qemu-img convert -O qcow2 IN OUT): %w",
			path, qi.BackingFilename, errdefs.ErrInvalidArgument)
	case qi.FormatSpecific.Data.DataFile != "":
		return Info{}, fmt.Errorf("disk %s keeps its data in an external file %q; convert it to a self-contained qcow2 first: %w",
			path, qi.FormatSpecific.Data.DataFile, errdefs.ErrInvalidArgument)
	case qi.VirtualSize <= 0:
		return Info{}, fmt.Errorf("disk %s has no size: %w", path, errdefs.ErrInvalidArgument)
	}
	for _, e := range qi.FormatSpecific.Data.Extents {
		if e.Filename != opened {
			return Info{}, fmt.Errorf("disk %s names an extent in another file %q; convert it to a single-file (monolithicSparse or streamOptimized) VMDK first: %w",
				path, e.Filename, errdefs.ErrInvalidArgument)
		}
	}
	return Info{Source: Source{Name: path, Format: format}, VirtualSize: qi.VirtualSize, ActualSize: qi.ActualSize}, nil
}

// Inspect checks a disk file of the given format before anything reads its content:
// header checks in Go, then `qemu-img info` and `qemu-img check` under InspectLimits.
// Errors about the file wrap errdefs.ErrInvalidArgument, with what is wrong and how to
// fix it.
func (t Tool) Inspect(ctx context.Context, src Source) (Info, error) {
	if !ValidFormat(src.Format) {
		return Info{}, fmt.Errorf("disk format %q: must be one of %s: %w", src.Format, strings.Join(Formats, ", "), errdefs.ErrInvalidArgument)
	}
	if src.ForceRaw && src.Format != "raw" {
		return Info{}, fmt.Errorf("disk %s: force-raw is for a disk given as raw (format=raw,force-raw), not %s: %w", src.Name, src.Format, errdefs.ErrInvalidArgument)
	}
	if err := precheck(src); err != nil {
		return Info{}, err
	}
	out, err := t.run(ctx, InspectLimits, []*os.File{src.File}, "info", "--output=json", "-f", src.Format, sourceArg)
	if err != nil {
		return Info{}, invalid(src.Name, err)
	}
	info, err := ParseInfo(out, sourceArg, src.Name, src.Format)
	if err != nil {
		return Info{}, err
	}
	info.Source = src
	if err := t.check(ctx, src); err != nil {
		return Info{}, err
	}
	return info, nil
}

// The magic numbers of VMDK sparse extents (QEMU's block/vmdk.c): VMDK4 ("KDMV", as
// monolithicSparse and streamOptimized files start) and VMDK3 ("COWD").
const (
	vmdk4Magic = "KDMV"
	vmdk3Magic = "COWD"
)

// precheck looks at the first bytes of the file itself, so that a header naming a host
// file is refused before qemu-img opens anything, and so is a file whose bytes say it
// is of another format than given (Sniff, CheckLooks).
func precheck(src Source) error {
	f, path := src.File, src.Name
	if err := CheckReadable(f); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("disk %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("disk %s is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	looks, err := Sniff(f, st.Size())
	if err != nil {
		return fmt.Errorf("disk %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if err := CheckLooks(path, src.Format, src.ForceRaw, looks); err != nil {
		return err
	}
	switch src.Format {
	case "qcow2":
		h, err := ParseQCOW2Header(io.NewSectionReader(f, 0, st.Size()))
		if err != nil {
			return fmt.Errorf("disk %s: %w", path, err)
		}
		if err := h.Refuse(); err != nil {
			return fmt.Errorf("disk %s: %w", path, err)
		}
	case "vmdk":
		// QEMU reads a VMDK whose first bytes are not a sparse extent's magic as a text
		// descriptor, which may name any file as an extent, wherever its text starts
		// (after any number of comment lines). So only a sparse extent is accepted.
		magic := make([]byte, 4)
		if n, _ := f.ReadAt(magic, 0); n < len(magic) || (string(magic) != vmdk4Magic && string(magic) != vmdk3Magic) {
			return fmt.Errorf("disk %s is not a single-file VMDK (no sparse extent magic %q at its start: a VMDK descriptor, which names other files); convert it to a single-file (monolithicSparse or streamOptimized) VMDK first (qemu-img convert -O vmdk -o subformat=streamOptimized IN OUT): %w",
				path, vmdk4Magic, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// check runs `qemu-img check`: corruption refuses the file, leaked clusters do not.
// Raw files have no metadata to check.
func (t Tool) check(ctx context.Context, src Source) error {
	if src.Format == "raw" {
		return nil
	}
	return t.runCheck(ctx, src.File, src.Name, "disk", "-f", src.Format, sourceArg)
}

// runCheck runs `qemu-img check` on f (what names the file for qemu-img: the format
// and sourceArg, or a json: spec over it); what is "disk" or "layer", for messages.
func (t Tool) runCheck(ctx context.Context, f *os.File, name, what string, source ...string) error {
	_, err := t.run(ctx, InspectLimits, []*os.File{f}, append([]string{"check", "--output=json"}, source...)...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return nil // leaked clusters only: wasted space, not wrong data
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return fmt.Errorf("%s %s is corrupt or truncated (qemu-img check found errors); repair it with qemu-img check -r all: %w",
			what, name, errdefs.ErrInvalidArgument)
	}
	return invalid(name, err)
}

// Convert writes the checked disk src as a self-contained qcow2 v3 file over the file
// at dst, which exists (sparse: zero clusters are not stored). It is deterministic: the
// same disk content gives the same bytes, so equal disks give equal layer digests.
//
// The qemu-img that writes dst always runs as kilnd. A Tool running as a caller (As)
// reads the caller's disk the other way round from the store: qemu-nbd running as the
// caller exports the disk read-only, given nothing but the caller's descriptor and a
// listening socket, and kilnd's qemu-img reads that export (see export). No process
// running as a caller ever holds a descriptor on, or owns, a file of the store.
// Errors about the disk wrap errdefs.ErrInvalidArgument; an export that stops
// answering fails after ConvertLimits.Stall with context.DeadlineExceeded.
func (t Tool) Convert(ctx context.Context, src Info, dst string) error {
	if t.Cred != nil {
		return t.convertExported(ctx, src, dst)
	}
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = t.run(ctx, ConvertLimits, []*os.File{src.File, out}, "convert", "-q", "-f", src.Format, "-O", "qcow2",
		"-o", layerOptions, sourceArg, "/dev/fd/4")
	if err != nil {
		return invalid(src.Name, err)
	}
	return nil
}

// layerOptions are the qcow2 creation options of every layer: v3, 64 KiB clusters.
const layerOptions = "compat=1.1,cluster_size=65536"

// Flatten writes the disk that a chain holds as one self-contained qcow2 file at dst:
// layers (store files, which only kilnd writes) bottom to top, then files (a volume's
// files, which a QEMU may hold open and write, its headers too). QEMU is given the chain
// itself, as nested JSON, and never follows a name found in a header; each of files is
// first copied beside dst with its header checked in the copied bytes (CopyChecked), so
// that the header qemu-img reads, which could name an external data file, is one kiln
// read, whatever the QEMU holding the file does meanwhile.
func (t Tool) Flatten(ctx context.Context, layers, files []string, dst string) error {
	chain := slices.Clone(layers)
	for _, f := range files {
		tmp, err := os.CreateTemp(filepath.Dir(dst), ".flatten-")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		err = CopyChecked(tmp, f)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("flatten: %w", err)
		}
		chain = append(chain, tmp.Name())
	}
	var spec any
	for _, f := range chain {
		node := map[string]any{"driver": "qcow2", "file": map[string]any{"driver": "file", "filename": f}}
		node["backing"] = spec // nil (JSON null) at the bottom
		spec = node
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	_, err = t.run(ctx, ConvertLimits, nil, "convert", "-q", "-O", "qcow2", "-o", layerOptions, "json:"+string(b), dst)
	if err != nil {
		return fmt.Errorf("flatten %d files: %w", len(chain), err)
	}
	return nil
}
