package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/images"
	"kiln/volumes"
)

// MaxBootFileSize bounds a kernel or initrd file.
const MaxBootFileSize = 512 << 20

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

// Disk is one disk file to register.
type Disk struct {
	Path       string // absolute
	Format     string // one of volumes.Formats; never probed
	DeviceName string // /dev/vdX; empty means the next free one from /dev/vda
}

// RegisterRequest describes an image to register from disk files.
type RegisterRequest struct {
	Name           string
	OwnerID        string
	Description    string
	Disks          []Disk
	Kernel, Initrd string // absolute paths, optional
	Cmdline        string
	Architecture   string // default x86_64
	BootMode       string // default legacy-bios
	RootDeviceType string // default ebs
	Tags           map[string]string
}

// Registration is a checked register request with its pending image record; Run makes
// the image.
type Registration struct {
	Image *images.Image // the pending record
	b     *Builder
	disks []volumes.Info
	devs  []string
	req   RegisterRequest
	done  atomic.Int64 // bytes of layers finished
	disk  atomic.Int64 // the disk being converted, +1
}

// Progress is roughly how many bytes are written of how many: the layers so far
// against what the disk files hold (a layer is about as large as its disk's data).
func (r *Registration) Progress() (done, total int64) {
	for _, d := range r.disks {
		total += d.ActualSize
	}
	done = r.done.Load()
	if i := r.disk.Load(); i > 0 {
		done += r.b.Store.IngestSize(r.ref(int(i - 1)))
	}
	return min(done, total), total
}

func (r *Registration) ref(i int) string { return "register-" + r.Image.ID + "-" + strconv.Itoa(i) }

var deviceName = regexp.MustCompile(`^/dev/vd[a-z]$`)

// MaxCmdlineLen bounds a kernel command line (the x86 boot protocol's limit).
const MaxCmdlineLen = 2048

// Prepare checks a register request (names, options, and every disk file through
// volumes.Tool.Inspect) and stores the image's record as pending. Nothing is stored
// when a check fails; errors wrap errdefs classes (InvalidArgument for bad input,
// AlreadyExists for a name the owner uses).
func (b *Builder) Prepare(ctx context.Context, req RegisterRequest) (*Registration, error) {
	req = withDefaults(req)
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	devs, err := deviceNames(req.Disks)
	if err != nil {
		return nil, err
	}
	infos := make([]volumes.Info, len(req.Disks))
	for i, d := range req.Disks {
		if infos[i], err = b.Tool.Inspect(ctx, d.Path, d.Format); err != nil {
			return nil, err
		}
	}
	for _, p := range []string{req.Kernel, req.Initrd} {
		if err := checkBootFile(p); err != nil {
			return nil, err
		}
	}
	im := &images.Image{
		ID:           images.NewID(images.ImagePrefix),
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
		},
	}
	if err := b.Store.CreateImage(im); err != nil {
		return nil, err
	}
	return &Registration{Image: im, b: b, disks: infos, devs: devs, req: req}, nil
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
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return err
	}
	for _, c := range []struct {
		what, v string
		allowed []string
	}{
		{"architecture", req.Architecture, images.Architectures},
		{"boot mode", req.BootMode, images.BootModes},
		{"root device type", req.RootDeviceType, images.RootDeviceTypes},
	} {
		if !slices.Contains(c.allowed, c.v) {
			return fmt.Errorf("%s %q: must be one of %s: %w", c.what, c.v, strings.Join(c.allowed, ", "), errdefs.ErrInvalidArgument)
		}
	}
	switch {
	case len(req.Disks) == 0:
		return fmt.Errorf("at least one disk is needed (--disk FILE): %w", errdefs.ErrInvalidArgument)
	case len(req.Disks) > 16:
		return fmt.Errorf("%d disks: at most 16: %w", len(req.Disks), errdefs.ErrInvalidArgument)
	case (req.Kernel == "") != (req.Initrd == ""):
		return fmt.Errorf("a kernel needs an initrd and an initrd a kernel (--kernel FILE --initrd FILE): %w", errdefs.ErrInvalidArgument)
	case req.Cmdline != "" && req.Kernel == "":
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

func checkBootFile(p string) error {
	if p == "" {
		return nil
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("boot file %q: must be an absolute path: %w", p, errdefs.ErrInvalidArgument)
	}
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("boot file %s does not exist: %w", p, errdefs.ErrInvalidArgument)
	case err != nil:
		return fmt.Errorf("boot file %s: %v: %w", p, err, errdefs.ErrInvalidArgument)
	case !st.Mode().IsRegular():
		return fmt.Errorf("boot file %s is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	case st.Size() == 0 || st.Size() > MaxBootFileSize:
		return fmt.Errorf("boot file %s: %d bytes (want 1 to %d): %w", p, st.Size(), MaxBootFileSize, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Run makes the image: each disk is converted into a qcow2 layer in the store (hashed
// in one read pass), with a snapshot record; the kernel and initrd become blobs; then
// the config and manifest; then the record becomes available. On failure the record
// becomes failed with the reason, the snapshots made for it are removed, and the error
// is returned. Cancelling ctx fails the image. Run is called once.
func (r *Registration) Run(ctx context.Context) (*images.Image, error) {
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
		desc, err := s.IngestLayer(ctx, r.ref(i), func(path string) error { return r.b.Tool.Convert(ctx, disk, path) })
		r.disk.Store(0)
		if err != nil {
			return nil, err
		}
		r.done.Add(desc.Size)
		sn := &images.Snapshot{
			ID:          images.NewID(images.SnapshotPrefix),
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
		path, mediaType string
		set             *digest.Digest
	}{
		{r.req.Kernel, images.MediaTypeKernel, &cfg.Kernel},
		{r.req.Initrd, images.MediaTypeInitrd, &cfg.Initrd},
	} {
		if bf.path == "" {
			continue
		}
		desc, err := s.IngestFile(ctx, "register-"+r.Image.ID+"-"+bf.mediaType, bf.mediaType, bf.path)
		if err != nil {
			return nil, fmt.Errorf("boot file %s: %w", bf.path, err)
		}
		*bf.set = desc.Digest
		layers = append(layers, desc)
	}
	return r.b.commit(ctx, r.Image.ID, cfg, layers)
}

// gib rounds a size in bytes up to whole GiB (at least 1), as volume sizes are given.
func gib(n int64) int64 {
	g := (n + (1<<30 - 1)) >> 30
	return max(g, 1)
}
