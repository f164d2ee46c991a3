package builder

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/images"
	"kiln/internal/ids"
	"kiln/volumes"
)

// CaptureVolume is one volume of an instance to capture: its qcow2 files not yet in
// the store (Files, bottom to top: the top, and any frozen under it by a live capture)
// and the layers under them.
type CaptureVolume struct {
	DeviceName          string
	Files               []string
	Chain               []digest.Digest // layers under Files, bottom to top
	SizeGiB             int64
	DeleteOnTermination bool
}

// Captured is what a capture made of one volume: a layer per file of
// CaptureVolume.Files, or, Flattened, one layer holding the whole disk.
type Captured struct {
	Layers    []digest.Digest
	Flattened bool
}

// MaxChain is the most layers a capture stacks; a deeper chain is flattened into one
// layer, so instances do not slow down generation after generation.
const MaxChain = 16

// CaptureRequest describes an image to create from an instance's volumes.
type CaptureRequest struct {
	Name, OwnerID, Description string
	Tags                       map[string]string
	SourceInstanceID           string
	Source                     *images.Image // the instance's image: boot settings
	Volumes                    []CaptureVolume
	// UEFIVars, when set, is the instance's UEFI variable store: it becomes the new
	// image's UEFI data. It does not change while Run reads it, but in a live capture
	// (--no-reboot), where the guest may write a variable meanwhile (docs/decisions.md).
	UEFIVars string
	// SnapshotTags are given to each snapshot made (EC2's TagSpecifications for
	// snapshots); Tags go to the image.
	SnapshotTags map[string]string
}

// Capture is a checked create request with its pending image record; Run makes it.
type Capture struct {
	Image *images.Image
	// Captured says, after a successful Run, which layers each volume's files became.
	Captured []Captured
	b        *Builder
	req      CaptureRequest
	done     atomic.Int64            // bytes of the volumes captured, and of the layer being copied
	flat     atomic.Pointer[flatten] // the flatten under way, if any
	total    atomic.Int64
	peak     atomic.Int64 // the most Progress has said
}

// flatten is a volume being flattened: qemu-img writes its ingest (ref), about as
// large as the disk's data, at most estimate.
type flatten struct {
	ref      string
	estimate int64
}

// Progress is how many bytes of the volumes' files are captured, of how many: what the
// volumes' files hold (measured again when the capture starts, once the instance is
// stopped or its files frozen, which do not exist before), and for a volume whose
// chain is flattened, the layers under it too, counted by what qemu-img has written.
// It never goes back. Safe for concurrent use.
func (c *Capture) Progress() (done, total int64) {
	done, total = c.done.Load(), c.total.Load()
	if f := c.flat.Load(); f != nil {
		done += min(c.b.Store.IngestSize(f.ref), f.estimate)
	}
	for {
		peak := c.peak.Load()
		if done <= peak {
			return min(peak, total), total
		}
		if c.peak.CompareAndSwap(peak, done) {
			return min(done, total), total
		}
	}
}

// measure is the bytes of each volume to capture: its files and, when its chain is
// flattened, the layers under them.
func (c *Capture) measure() []int64 {
	sizes := make([]int64, len(c.req.Volumes))
	for i, v := range c.req.Volumes {
		for _, f := range v.Files {
			if st, err := os.Stat(f); err == nil {
				sizes[i] += st.Size()
			}
		}
		if len(v.Chain)+len(v.Files) > MaxChain {
			for _, d := range v.Chain {
				if st, err := os.Stat(c.b.Store.BlobPath(d)); err == nil {
					sizes[i] += st.Size()
				}
			}
		}
	}
	return sizes
}

// setTotal makes the volumes' sizes the total that Progress says.
func (c *Capture) setTotal(sizes []int64) {
	var total int64
	for _, n := range sizes {
		total += n
	}
	c.total.Store(total)
}

// progressWriter counts what passes into an atomic counter.
type progressWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (p progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n.Add(int64(n))
	return n, err
}

// PrepareCapture checks a create request and stores the new image's record, pending.
func (b *Builder) PrepareCapture(req CaptureRequest) (*Capture, error) {
	if err := images.CheckName(req.Name); err != nil {
		return nil, err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return nil, err
	}
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return nil, err
	}
	if err := images.CheckTags(req.SnapshotTags, 0); err != nil {
		return nil, fmt.Errorf("snapshot %w", err)
	}
	src := req.Source
	im := &images.Image{
		ID: ids.NewID(images.ImagePrefix), Name: req.Name, OwnerID: req.OwnerID, Description: req.Description,
		State: images.StatePending, Tags: req.Tags, CreationDate: b.now(),
		SourceInstanceID: req.SourceInstanceID, SourceImageID: src.ID,
		Config: images.Config{
			Architecture: src.Architecture, BootMode: src.BootMode, RootDeviceName: src.RootDeviceName,
			RootDeviceType: src.RootDeviceType, Kernel: src.Kernel, Initrd: src.Initrd, Cmdline: src.Cmdline, SSHUser: src.SSHUser,
			UEFIData: src.UEFIData, SecureBoot: src.SecureBoot, TPMSupport: src.TPMSupport,
		},
	}
	if err := b.Store.CreateImage(im); err != nil {
		return nil, err
	}
	c := &Capture{Image: im, b: b, req: req}
	c.setTotal(c.measure())
	return c, nil
}

// Run captures each volume as a new layer on its chain (only what the instance wrote:
// the overlay's clusters), with a snapshot record, then the config and manifest, then
// the record becomes available; on failure it becomes failed, as a register does. The
// volumes must not change while it runs (the instance is stopped).
func (c *Capture) Run(ctx context.Context) (*images.Image, error) {
	start := time.Now()
	im, err := c.run(ctx)
	return c.b.finish(ctx, c.Image.ID, start, im, err)
}

func (c *Capture) run(ctx context.Context) (*images.Image, error) {
	s := c.b.Store
	release := s.Hold()
	defer release()
	cfg := c.Image.Config
	var layers []ocispec.Descriptor
	seen := map[digest.Digest]bool{}
	addLayer := func(d ocispec.Descriptor) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			layers = append(layers, d)
		}
	}
	c.Captured = make([]Captured, len(c.req.Volumes))
	sizes := c.measure() // the files are all there now, and no longer change
	c.setTotal(sizes)
	var before int64 // the bytes of the volumes before this one
	for i, v := range c.req.Volumes {
		c.done.Store(before)
		before += sizes[i]
		chain := slices.Clone(v.Chain)
		var desc ocispec.Descriptor
		if len(v.Chain)+len(v.Files) > MaxChain {
			var layers []string
			for _, d := range v.Chain {
				layers = append(layers, s.BlobPath(d))
			}
			ref := "create-" + c.Image.ID + "-" + strconv.Itoa(i)
			c.flat.Store(&flatten{ref: ref, estimate: sizes[i]})
			var err error
			desc, err = s.IngestLayer(ctx, ref, func(path string) error {
				return c.b.Tool.Flatten(ctx, layers, v.Files, path)
			})
			c.flat.Store(nil) // then the volume's bytes: never both at once (Progress's peak hides the gap)
			c.done.Store(before)
			if err != nil {
				return nil, fmt.Errorf("volume %s: flatten: %w", v.DeviceName, err)
			}
			chain = []digest.Digest{desc.Digest}
			c.Captured[i] = Captured{Layers: []digest.Digest{desc.Digest}, Flattened: true}
		}
		for j, file := range v.Files {
			if c.Captured[i].Flattened {
				break
			}
			ref := "create-" + c.Image.ID + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
			parent := ""
			if len(chain) > 0 {
				parent = chain[len(chain)-1].Encoded()
			}
			var err error
			desc, err = s.IngestStream(ctx, ref, images.MediaTypeLayer, func(w io.Writer) error {
				_, err := volumes.CopyLayer(progressWriter{w, &c.done}, file, parent)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.DeviceName, err)
			}
			chain = append(chain, desc.Digest)
			c.Captured[i].Layers = append(c.Captured[i].Layers, desc.Digest)
		}
		c.done.Store(before)
		for _, d := range chain[:len(chain)-1] {
			size, err := s.BlobSize(ctx, d)
			if err != nil {
				return nil, fmt.Errorf("volume %s: parent layer: %w", v.DeviceName, err)
			}
			addLayer(ocispec.Descriptor{MediaType: images.MediaTypeLayer, Digest: d, Size: size})
		}
		addLayer(desc)
		sn := &images.Snapshot{
			ID: ids.NewID(images.SnapshotPrefix), OwnerID: c.Image.OwnerID,
			Description: fmt.Sprintf("%s of %s for %s (%s)", v.DeviceName, c.req.SourceInstanceID, c.Image.ID, c.Image.Name),
			Layer:       desc.Digest, Chain: chain, VolumeSize: v.SizeGiB, VirtualSize: v.SizeGiB << 30,
			StorageSize: desc.Size, ImageID: c.Image.ID, StartTime: c.b.now(), Tags: c.req.SnapshotTags,
		}
		if err := s.PutSnapshot(sn); err != nil {
			return nil, err
		}
		cfg.BlockDeviceMappings = append(cfg.BlockDeviceMappings, images.BlockDeviceMapping{
			DeviceName: v.DeviceName,
			EBS: &images.EBS{SnapshotID: sn.ID, Layer: desc.Digest, VolumeSize: v.SizeGiB,
				DeleteOnTermination: v.DeleteOnTermination},
		})
	}
	if c.req.UEFIVars != "" { // EC2's UEFI data: the variables as the instance left them
		desc, err := s.IngestStream(ctx, "create-"+c.Image.ID+"-uefi", images.MediaTypeUEFIData, func(w io.Writer) error {
			f, err := os.Open(c.req.UEFIVars)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(w, io.LimitReader(f, images.MaxUEFIDataSize))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("UEFI variables: %w", err)
		}
		cfg.UEFIData = desc.Digest
	}
	for _, b := range []struct {
		d  digest.Digest
		mt string
	}{{cfg.Kernel, images.MediaTypeKernel}, {cfg.Initrd, images.MediaTypeInitrd}, {cfg.UEFIData, images.MediaTypeUEFIData}} {
		if b.d == "" {
			continue
		}
		size, err := s.BlobSize(ctx, b.d)
		if err != nil {
			return nil, fmt.Errorf("boot file: %w", err)
		}
		addLayer(ocispec.Descriptor{MediaType: b.mt, Digest: b.d, Size: size})
	}
	return c.b.commit(ctx, c.Image.ID, cfg, layers)
}

// commit writes the config and manifest and makes the image available.
func (b *Builder) commit(ctx context.Context, id string, cfg images.Config, layers []ocispec.Descriptor) (*images.Image, error) {
	cdesc, err := b.Store.WriteJSON(ctx, images.MediaTypeConfig, cfg)
	if err != nil {
		return nil, err
	}
	mdesc, err := b.Store.WriteManifest(ctx, cdesc, layers)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return b.Store.UpdateImage(id, func(im *images.Image) error {
		im.Config = cfg
		im.Manifest = mdesc.Digest
		im.State, im.StateReason = images.StateAvailable, ""
		return nil
	})
}

// finish records the outcome of making an image: available, or failed with the reason
// and without the snapshots made for it.
func (b *Builder) finish(ctx context.Context, id string, start time.Time, im *images.Image, err error) (*images.Image, error) {
	l := log.G(ctx).WithField("image", id).WithField("dur", time.Since(start))
	if err == nil {
		l.Info("image available")
		return im, nil
	}
	reason := err.Error()
	if ctx.Err() != nil {
		reason = "cancelled: " + reason
	}
	failed, ferr := b.Store.UpdateImage(id, func(im *images.Image) error {
		im.State, im.StateReason = images.StateFailed, reason
		im.BlockDeviceMappings = nil
		return nil
	})
	if ferr != nil {
		return nil, fmt.Errorf("%w (and recording the failure: %v)", err, ferr)
	}
	for _, sn := range b.Store.Snapshots() {
		if sn.ImageID == id {
			if derr := b.Store.DeleteSnapshot(sn.ID); derr != nil {
				l.WithError(derr).WithField("snapshot", sn.ID).Warn("snapshot of a failed image stays until the image is deregistered")
			}
		}
	}
	l.WithError(err).Info("image failed")
	return failed, err
}
