package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/hypervisor"
	"kiln/images"
	"kiln/internal/ids"
	"kiln/volumes"
)

// MaxBootFileSize bounds a kernel or initrd file.
const MaxBootFileSize = images.MaxBootFileSize

// Builder makes images in a store.
type Builder struct {
	Store *images.Store
	Tool  volumes.Tool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (b *Builder) now() time.Time {
	if b.Now != nil {
		return b.Now().UTC()
	}
	return time.Now().UTC()
}

// Disk is one disk file to register: the caller's open file (its Format one of
// volumes.Formats, never probed) and its device.
type Disk struct {
	volumes.Source
	DeviceName string // /dev/vdX; empty means the next free one from /dev/vda
}

// RegisterRequest describes an image to register from disk files.
type RegisterRequest struct {
	Name           string
	OwnerID        string
	Description    string
	Disks          []Disk
	Kernel, Initrd *os.File // optional; the caller's open files
	Cmdline        string
	Architecture   string // default x86_64
	BootMode       string // default legacy-bios
	RootDeviceType string // default ebs
	SSHUser        string // kiln ssh's default user; none: cloud-init's
	Tags           map[string]string
	// Tool, when set, reads the disk files instead of the Builder's own: kilnd gives
	// the one running as the caller (volumes.Tool.As).
	Tool *volumes.Tool
	// UEFIData, when set, is the variable store instances start with (the caller's
	// open file: an OVMF flash image of the installed template's size). SecureBoot and
	// TPMSupport are the image's (images.Config); all three need a UEFI boot mode.
	UEFIData   *os.File
	SecureBoot bool
	TPMSupport string
}

// Files are the request's files. Prepare takes them: they are closed when it fails or
// when Run ends.
func (req RegisterRequest) Files() []*os.File {
	var out []*os.File
	for _, d := range req.Disks {
		out = append(out, d.File)
	}
	for _, f := range []*os.File{req.Kernel, req.Initrd, req.UEFIData} {
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// Registration is a checked register request with its pending image record; Run makes
// the image.
type Registration struct {
	Image *images.Image // the pending record
	b     *Builder
	tool  volumes.Tool
	disks []volumes.Info
	devs  []string
	req   RegisterRequest
	done  atomic.Int64 // bytes of layers finished
	peak  atomic.Int64 // the most Progress has said
	disk  atomic.Int64 // the disk being converted, +1
}

// Progress is roughly how many bytes are written of how many: the layers so far
// against what the disk files hold (a layer is about as large as its disk's data). It
// never goes back: between the commit of a layer (its ingest gone) and the count of
// its bytes, the sum would drop for a moment.
func (r *Registration) Progress() (done, total int64) {
	for _, d := range r.disks {
		total += d.ActualSize
	}
	done = r.done.Load()
	if i := r.disk.Load(); i > 0 {
		done += r.b.Store.IngestSize(r.ref(int(i - 1)))
	}
	for {
		peak := r.peak.Load()
		if done <= peak {
			return min(peak, total), total
		}
		if r.peak.CompareAndSwap(peak, done) {
			return min(done, total), total
		}
	}
}

func (r *Registration) ref(i int) string { return "register-" + r.Image.ID + "-" + strconv.Itoa(i) }

var deviceName = regexp.MustCompile(`^/dev/vd[a-z]$`)

// MaxCmdlineLen bounds a kernel command line (the x86 boot protocol's limit).
const MaxCmdlineLen = 2048

// Prepare checks a register request (names, options, and every disk file through
// volumes.Tool.Inspect) and stores the image's record as pending. Nothing is stored
// when a check fails; errors wrap errdefs classes (InvalidArgument for bad input,
// AlreadyExists for a name the owner uses). It takes the request's files (Files).
func (b *Builder) Prepare(ctx context.Context, req RegisterRequest) (_ *Registration, err error) {
	defer func() {
		if err != nil {
			closeFiles(req.Files())
		}
	}()
	req = withDefaults(req)
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	devs, err := deviceNames(req.Disks)
	if err != nil {
		return nil, err
	}
	tool := b.Tool
	if req.Tool != nil {
		tool = *req.Tool
	}
	if tool.SocketDir == "" {
		// A caller's disk is exported to kilnd's qemu-img on a socket in the store,
		// which is kilnd's alone (docs/layout.md).
		tool.SocketDir = filepath.Join(b.Store.Root(), "run")
	}
	infos := make([]volumes.Info, len(req.Disks))
	for i, d := range req.Disks {
		if infos[i], err = tool.Inspect(ctx, d.Source); err != nil {
			return nil, err
		}
	}
	if err := checkBootFile("kernel", req.Kernel); err != nil {
		return nil, err
	}
	if err := checkBootFile("initrd", req.Initrd); err != nil {
		return nil, err
	}
	if err := checkUEFIData(req.UEFIData, req.SecureBoot); err != nil {
		return nil, err
	}
	im := &images.Image{
		ID:           ids.NewID(images.ImagePrefix),
		Name:         req.Name,
		OwnerID:      req.OwnerID,
		Description:  req.Description,
		State:        images.StatePending,
		Tags:         req.Tags,
		CreationDate: b.now(),
		Config: images.Config{
			Architecture:   req.Architecture,
			BootMode:       req.BootMode,
			RootDeviceName: devs[0],
			RootDeviceType: req.RootDeviceType,
			Cmdline:        req.Cmdline,
			SSHUser:        req.SSHUser,
			SecureBoot:     req.SecureBoot,
			TPMSupport:     req.TPMSupport,
		},
	}
	if err := b.Store.CreateImage(im); err != nil {
		return nil, err
	}
	return &Registration{Image: im, b: b, tool: tool, disks: infos, devs: devs, req: req}, nil
}

func withDefaults(req RegisterRequest) RegisterRequest {
	if req.Architecture == "" {
		req.Architecture = "x86_64"
	}
	if req.BootMode == "" {
		req.BootMode = "legacy-bios"
	}
	if req.RootDeviceType == "" {
		req.RootDeviceType = "ebs"
	}
	return req
}

func checkRequest(req RegisterRequest) error {
	if err := images.CheckName(req.Name); err != nil {
		return err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return err
	}
	if err := images.CheckSSHUser(req.SSHUser); err != nil {
		return err
	}
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return err
	}
	if err := images.CheckMachine(req.Architecture, req.BootMode, req.RootDeviceType); err != nil {
		return err
	}
	if err := images.CheckFirmware(req.BootMode, req.UEFIData != nil, req.SecureBoot, req.TPMSupport); err != nil {
		return err
	}
	switch {
	case req.SecureBoot && req.Kernel != nil:
		// OVMF (2022.11) does not verify a kernel QEMU hands it (-kernel): one that
		// fails verification is started by its legacy Linux loader all the same. A
		// Secure Boot that verified nothing would be a lie (docs/decisions.md).
		return fmt.Errorf("--secure-boot with --kernel: Secure Boot verifies what the firmware loads from a disk, and a kernel given with --kernel is not verified by OVMF: "+
			"register a disk that boots by itself (an EFI system partition with a signed loader) without --kernel: %w", errdefs.ErrInvalidArgument)
	case len(req.Disks) == 0:
		return fmt.Errorf("at least one disk is needed (--disk FILE): %w", errdefs.ErrInvalidArgument)
	case len(req.Disks) > 16:
		return fmt.Errorf("%d disks: at most 16: %w", len(req.Disks), errdefs.ErrInvalidArgument)
	case (req.Kernel == nil) != (req.Initrd == nil):
		return fmt.Errorf("a kernel needs an initrd and an initrd a kernel (--kernel FILE --initrd FILE): %w", errdefs.ErrInvalidArgument)
	case req.Cmdline != "" && req.Kernel == nil:
		return fmt.Errorf("a kernel command line needs a kernel (--kernel FILE): %w", errdefs.ErrInvalidArgument)
	case len(req.Cmdline) > MaxCmdlineLen || strings.ContainsAny(req.Cmdline, "\x00\n\r"):
		return fmt.Errorf("kernel command line: at most %d bytes on one line: %w", MaxCmdlineLen, errdefs.ErrInvalidArgument)
	}
	return nil
}

// deviceNames gives each disk its device: the one asked for, or the next free one.
func deviceNames(disks []Disk) ([]string, error) {
	devs := make([]string, len(disks))
	used := map[string]bool{}
	for i, d := range disks {
		if d.DeviceName == "" {
			continue
		}
		if !deviceName.MatchString(d.DeviceName) {
			return nil, fmt.Errorf("device name %q: must be /dev/vda to /dev/vdz: %w", d.DeviceName, errdefs.ErrInvalidArgument)
		}
		if used[d.DeviceName] {
			return nil, fmt.Errorf("device name %s is given twice: %w", d.DeviceName, errdefs.ErrInvalidArgument)
		}
		used[d.DeviceName] = true
		devs[i] = d.DeviceName
	}
	next := 'a'
	for i := range devs {
		for devs[i] == "" {
			if n := "/dev/vd" + string(next); !used[n] {
				devs[i], used[n] = n, true
			}
			next++
		}
	}
	return devs, nil
}

func checkBootFile(what string, f *os.File) error {
	if f == nil {
		return nil
	}
	st, err := checkRegularFile(what, f)
	if err != nil {
		return err
	}
	if st.Size() == 0 || st.Size() > MaxBootFileSize {
		return fmt.Errorf("%s: %d bytes (want 1 to %d): %w", what, st.Size(), MaxBootFileSize, errdefs.ErrInvalidArgument)
	}
	return nil
}

// checkRegularFile checks that a file a caller gives is readable and a regular file, and
// returns what it is.
func checkRegularFile(what string, f *os.File) (os.FileInfo, error) {
	if err := volumes.CheckReadable(f); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %v: %w", what, err, errdefs.ErrInvalidArgument)
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file: %w", what, errdefs.ErrInvalidArgument)
	}
	return st, nil
}

// checkUEFIData checks a variable store a caller gives: readable, a regular file that
// is an OVMF store (hypervisor.CheckVars), with a platform key when the image boots
// with Secure Boot (without one OVMF stays in setup mode and checks nothing).
func checkUEFIData(f *os.File, secureBoot bool) error {
	if f == nil {
		return nil
	}
	st, err := checkRegularFile("UEFI data", f)
	if err != nil {
		return err
	}
	if err := hypervisor.CheckVars(f, st.Size()); err != nil {
		return fmt.Errorf("UEFI data: %v (give a copy of OVMF's variable store, as an instance's uefi-vars.fd is): %w", err, errdefs.ErrInvalidArgument)
	}
	if secureBoot && !hypervisor.HasPlatformKey(f, st.Size()) {
		return fmt.Errorf("UEFI data has no platform key (PK): under --secure-boot the firmware would stay in setup mode and check nothing; "+
			"enroll keys (OVMF's %s has Microsoft's) or leave out --secure-boot: %w", "OVMF_VARS_4M.ms.fd", errdefs.ErrInvalidArgument)
	}
	return nil
}

// Run makes the image: each disk is converted into a qcow2 layer in the store (hashed
// in one read pass), with a snapshot record; the kernel and initrd become blobs; then
// the config and manifest; then the record becomes available. On failure the record
// becomes failed with the reason, the snapshots made for it are removed, and the error
// is returned. Cancelling ctx fails the image. Run is called once.
func (r *Registration) Run(ctx context.Context) (*images.Image, error) {
	defer closeFiles(r.req.Files())
	start := time.Now()
	im, err := r.run(ctx)
	return r.b.finish(ctx, r.Image.ID, start, im, err)
}

func (r *Registration) run(ctx context.Context) (*images.Image, error) {
	s := r.b.Store
	release := s.Hold()
	defer release()

	var layers []ocispec.Descriptor
	cfg := r.Image.Config
	for i, disk := range r.disks {
		r.disk.Store(int64(i + 1))
		desc, err := s.IngestLayer(ctx, r.ref(i), func(path string) error { return r.tool.Convert(ctx, disk, path) })
		r.disk.Store(0)
		if err != nil {
			return nil, err
		}
		r.done.Add(desc.Size)
		sn := &images.Snapshot{
			ID:          ids.NewID(images.SnapshotPrefix),
			OwnerID:     r.Image.OwnerID,
			Description: fmt.Sprintf("%s of %s (%s)", r.devs[i], r.Image.ID, r.Image.Name),
			Layer:       desc.Digest,
			Chain:       []digest.Digest{desc.Digest},
			VolumeSize:  gib(disk.VirtualSize),
			VirtualSize: disk.VirtualSize,
			StorageSize: desc.Size,
			ImageID:     r.Image.ID,
			StartTime:   r.b.now(),
		}
		if err := s.PutSnapshot(sn); err != nil {
			return nil, err
		}
		layers = append(layers, desc)
		cfg.BlockDeviceMappings = append(cfg.BlockDeviceMappings, images.BlockDeviceMapping{
			DeviceName: r.devs[i],
			EBS: &images.EBS{
				SnapshotID:          sn.ID,
				Layer:               desc.Digest,
				VolumeSize:          sn.VolumeSize,
				DeleteOnTermination: true,
			},
		})
	}
	for _, bf := range []struct {
		what, mediaType string
		f               *os.File
		set             *digest.Digest
		limit           int64 // the caller may grow the file after Prepare checked it
	}{
		{"kernel", images.MediaTypeKernel, r.req.Kernel, &cfg.Kernel, MaxBootFileSize},
		{"initrd", images.MediaTypeInitrd, r.req.Initrd, &cfg.Initrd, MaxBootFileSize},
		{"UEFI data", images.MediaTypeUEFIData, r.req.UEFIData, &cfg.UEFIData, images.MaxUEFIDataSize},
	} {
		if bf.f == nil {
			continue
		}
		desc, err := s.IngestStream(ctx, "register-"+r.Image.ID+"-"+bf.mediaType, bf.mediaType, func(w io.Writer) error {
			_, err := io.Copy(w, io.NewSectionReader(bf.f, 0, bf.limit))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bf.what, err)
		}
		*bf.set = desc.Digest
		layers = append(layers, desc)
	}
	return r.b.commit(ctx, r.Image.ID, cfg, layers)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// gib rounds a size in bytes up to whole GiB (at least 1), as volume sizes are given.
func gib(n int64) int64 {
	g := (n + (1<<30 - 1)) >> 30
	return max(g, 1)
}
