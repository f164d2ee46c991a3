package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"kiln/images"
	"kiln/internal/ids"
)

// Bounds on what a registry may hand kilnd (each defined here only).
const (
	// MaxManifestSize bounds a manifest: kiln's are a few KiB.
	MaxManifestSize = 1 << 20
	// MaxConfigSize bounds an image config.
	MaxConfigSize = 1 << 20
	// MaxLayers bounds the layers of one image: 16 devices of chains of 17 layers
	// (captures flatten deeper chains), a kernel and an initrd.
	MaxLayers = 16*17 + 2
	// MaxDevices bounds an image's block device mappings (as register does).
	MaxDevices = 16
	// MaxLayerSize bounds one layer blob.
	MaxLayerSize = 1 << 40
	// MaxVolumeGiB bounds a device's volume size in a pulled config.
	MaxVolumeGiB = 16 << 10
	// MaxCmdlineLen bounds a kernel command line (builder.MaxCmdlineLen).
	MaxCmdlineLen = 2048
	// FreeReserve is the space a pull leaves free on the store's filesystem.
	FreeReserve = 256 << 20
)

// Concurrency is how many blobs a push or pull moves at once.
const Concurrency = 3

// LayerCheck checks a layer's file (the bytes about to be committed, or the stored
// blob) as a registered disk is checked. name is the layer's digest, for messages;
// parents are the bare hex digests of the layers listed before it in the image. It
// returns the layer's virtual size and the parent its header names ("" for none), or an
// error saying why the layer is refused.
type LayerCheck func(ctx context.Context, path, name string, parents []string) (virtualSize int64, parent string, err error)

// Puller pulls kiln images into a store.
type Puller struct {
	Store *images.Store
	Check LayerCheck
	// Stall bounds the time a blob's body may bring no byte; zero means a minute.
	Stall time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// PullRequest is one pull: where from, and the new image's record.
type PullRequest struct {
	Remote
	Name        string // empty: made of the reference (REPOSITORY's last part and TAG)
	OwnerID     string
	Description string
	Tags        map[string]string
	// Admit, when set, is asked once the manifest is checked for the bytes of the
	// layers the store lacks, before any is fetched, and may refuse (a quota); release
	// is called when the pull ends.
	Admit func(bytes int64) (release func(), err error)
	// Have reports a blob the caller may use already (a layer of an image it may launch,
	// of a snapshot of its own): only such a blob is not fetched again. Any other blob the
	// store holds still comes from the source, whole and hashing right, so that knowing a
	// digest gives no one another user's content. Nil: none.
	Have func(digest.Digest) bool
}

// Pull fetches the kiln image req names into the store and makes its record
// (available) and snapshots, owned by req.OwnerID. Everything the registry sends is
// checked (see the package doc) before the record exists: on any failure there is no
// record, no snapshot and no ingest; blobs committed before the failure stay until GC.
// Errors wrap errdefs classes: InvalidArgument for a bad request or an image kiln
// refuses, DataLoss for bytes that are not what the manifest says, NotFound,
// PermissionDenied (credentials), AlreadyExists (the name), Unavailable (the registry).
func (p *Puller) Pull(ctx context.Context, req PullRequest) (*images.Image, error) {
	repo, tag, err := req.repository()
	if err != nil {
		return nil, err
	}
	ref := repo.Reference.String()
	if req.Name == "" {
		req.Name = DefaultName(repo.Reference.Repository, tag)
	}
	return p.pull(ctx, source{
		what: "pull", ref: ref, from: "pulled from",
		sourceRef: repo.Reference.Registry + "/" + repo.Reference.Repository + refPart(tag),
		manifest: func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error) {
			mdesc, rc, err := repo.FetchReference(ctx, tag)
			if err == nil {
				if d, derr := digest.Parse(tag); derr == nil && d != mdesc.Digest {
					rc.Close()
					return mdesc, nil, fmt.Errorf("the registry answered with manifest %s: %w", mdesc.Digest, errdefs.ErrDataLoss)
				}
			}
			return mdesc, rc, err
		},
		blobs: repo.Blobs(),
		err:   func(err error) error { return registryError("pull", ref, err) },
	}, req)
}

// source is where a pull's manifest and blobs come from: a registry, or an OCI image
// layout (Import). Whatever it is, what it gives goes through the same checks.
type source struct {
	what, ref, from string // "pull", the reference, "pulled from": for messages
	sourceRef       string // for the record
	manifest        func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error)
	blobs           fetcher
	err             func(error) error // says what an error of the source's means
}

// pull is Pull and Import: the image src holds, checked and stored.
func (p *Puller) pull(ctx context.Context, src source, req PullRequest) (*images.Image, error) {
	ref, name := src.ref, req.Name
	if err := images.CheckName(name); err != nil {
		return nil, err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return nil, err
	}
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return nil, err
	}
	if err := p.Store.CheckNameFree(req.OwnerID, name); err != nil {
		return nil, err
	}
	l := log.G(ctx).WithField("reference", ref)

	// The manifest: bounded, its digest checked, a kiln image's.
	mdesc, rc, err := src.manifest(ctx)
	if err != nil {
		return nil, src.err(err)
	}
	mb, err := readVerified(rc, mdesc, MaxManifestSize, "manifest")
	rc.Close()
	if err != nil {
		return nil, src.err(err)
	}
	m, err := parseManifest(mb, mdesc)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", src.what, ref, err)
	}

	// The config: bounded, verified, every field checked against the manifest.
	rc, err = src.blobs.Fetch(ctx, m.Config)
	if err != nil {
		return nil, src.err(err)
	}
	cb, err := readVerified(rc, m.Config, MaxConfigSize, "config")
	rc.Close()
	if err != nil {
		return nil, src.err(err)
	}
	cfg, err := parseConfig(cb, m.Layers)
	if err != nil {
		return nil, fmt.Errorf("%s %s: config: %w", src.what, ref, err)
	}

	// Room for what the store lacks, and the caller's quota, before a byte is fetched;
	// what travels is that and what the caller must show it has (Have).
	have := req.Have
	if have == nil {
		have = func(digest.Digest) bool { return false }
	}
	skip, fresh := map[digest.Digest]bool{}, map[digest.Digest]bool{}
	var need, travel int64
	for _, d := range m.Layers {
		stored := p.Store.HasBlob(ctx, d.Digest)
		skip[d.Digest] = stored && have(d.Digest)
		if !stored {
			need += d.Size
			fresh[d.Digest] = true
		}
		if !skip[d.Digest] {
			travel += d.Size
		}
	}
	free, err := p.Store.Free()
	if err != nil {
		return nil, fmt.Errorf("%s %s: free space: %w", src.what, ref, err)
	}
	if need+FreeReserve > free {
		return nil, fmt.Errorf("%s %s: its layers need %d MiB that the store lacks, and its filesystem has %d MiB free (%d MiB kept): free some (kiln gc) and try again: %w",
			src.what, ref, need>>20, free>>20, FreeReserve>>20, errdefs.ErrResourceExhausted)
	}
	if req.Admit != nil {
		release, err := req.Admit(need)
		if err != nil {
			return nil, err
		}
		defer release()
	}

	release := p.Store.Hold() // GC keeps the blobs until the record reaches them
	defer release()
	start := time.Now()
	l.WithField("digest", mdesc.Digest).WithField("layers", len(m.Layers)).Info("pull")
	t := &tally{fn: req.Progress}
	t.add(0, travel)
	sizes, parents, fetched, err := p.fetchLayers(ctx, src.blobs, m.Layers, skip, t)
	if err != nil {
		return nil, src.err(err)
	}

	// Each device's chain, from its top layer down through the parents the headers name.
	now := time.Now().UTC()
	if p.Now != nil {
		now = p.Now().UTC()
	}
	id := ids.NewID(images.ImagePrefix)
	used := map[digest.Digest]bool{cfg.Kernel: true, cfg.Initrd: true, cfg.UEFIData: true}
	chains := make([][]digest.Digest, len(cfg.BlockDeviceMappings))
	for i, bdm := range cfg.BlockDeviceMappings {
		for d := bdm.EBS.Layer; d != ""; d = parents[d] {
			chains[i] = append([]digest.Digest{d}, chains[i]...)
			used[d] = true
		}
	}
	for _, d := range m.Layers {
		if !used[d.Digest] {
			return nil, fmt.Errorf("%s %s: layer %s is in no device's chain: a kiln image holds only its devices' layers, a kernel, an initrd and UEFI data: %w",
				src.what, ref, d.Digest, errdefs.ErrInvalidArgument)
		}
	}
	var snaps []*images.Snapshot
	charged := map[digest.Digest]bool{}
	fail := func(err error) (*images.Image, error) {
		for _, sn := range snaps {
			if derr := p.Store.DeleteSnapshot(sn.ID); derr != nil {
				l.WithError(derr).WithField("snapshot", sn.ID).Warn("snapshot of a failed pull stays")
			}
		}
		return nil, err
	}
	for i, bdm := range cfg.BlockDeviceMappings {
		top := bdm.EBS.Layer
		sn := &images.Snapshot{
			ID:          ids.NewID(images.SnapshotPrefix),
			OwnerID:     req.OwnerID,
			Description: fmt.Sprintf("%s of %s (%s), %s %s", bdm.DeviceName, id, name, src.from, ref),
			Layer:       top,
			Chain:       chains[i],
			VolumeSize:  max(bdm.EBS.VolumeSize, gib(sizes[top])),
			VirtualSize: sizes[top],
			StorageSize: charge(m.Layers, chains[i], fresh, charged),
			ImageID:     id,
			StartTime:   now,
		}
		if err := p.Store.PutSnapshot(sn); err != nil {
			return fail(err)
		}
		snaps = append(snaps, sn)
		cfg.BlockDeviceMappings[i].EBS = &images.EBS{
			SnapshotID: sn.ID, Layer: top, VolumeSize: sn.VolumeSize,
			DeleteOnTermination: bdm.EBS.DeleteOnTermination,
		}
	}
	cdesc, err := p.Store.WriteJSON(ctx, images.MediaTypeConfig, cfg)
	if err != nil {
		return fail(err)
	}
	local, err := p.Store.WriteManifest(ctx, cdesc, m.Layers)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	im := &images.Image{
		ID: id, Name: name, OwnerID: req.OwnerID, Description: req.Description,
		State: images.StateAvailable, Tags: req.Tags, CreationDate: now,
		Manifest:     local.Digest,
		SourceRef:    src.sourceRef,
		SourceDigest: mdesc.Digest,
		Config:       cfg,
	}
	if err := p.Store.CreateImage(im); err != nil {
		return fail(err)
	}
	l.WithField("image", id).WithField("dur", time.Since(start)).WithField("bytes", fetched).Info(src.from[:strings.IndexByte(src.from, ' ')])
	return im, nil
}

// refPart is ":TAG", or "@DIGEST" for a reference by digest.
func refPart(tag string) string {
	if _, err := digest.Parse(tag); err == nil {
		return "@" + tag
	}
	return ":" + tag
}

func tagPart(tag string) string {
	if _, err := digest.Parse(tag); err == nil {
		return ""
	}
	return ":" + tag
}

// charge is the stored bytes a pulled snapshot counts for its owner's quota: its top
// layer, as a registered or captured snapshot's, and the layers under it that this pull
// brought into the store; each layer once in a pull (charged).
func charge(layers []ocispec.Descriptor, chain []digest.Digest, fresh, charged map[digest.Digest]bool) int64 {
	var n int64
	for i, d := range chain {
		if !charged[d] && (i == len(chain)-1 || fresh[d]) {
			charged[d] = true
			n += sizeOf(layers, d)
		}
	}
	return n
}

func sizeOf(layers []ocispec.Descriptor, d digest.Digest) int64 {
	for _, x := range layers {
		if x.Digest == d {
			return x.Size
		}
	}
	return 0
}

// fetchLayers stores every layer of the manifest, Concurrency at a time, each verified
// while it streams and (qcow2 layers) checked before it is committed. It returns each
// qcow2 layer's virtual size and the parent its header names, and the bytes fetched.
func (p *Puller) fetchLayers(ctx context.Context, repo fetcher, layers []ocispec.Descriptor, skip map[digest.Digest]bool, t *tally) (sizes map[digest.Digest]int64, parents map[digest.Digest]digest.Digest, fetched int64, err error) {
	stall := p.Stall
	if stall == 0 {
		stall = time.Minute
	}
	sizes = map[digest.Digest]int64{}
	parents = map[digest.Digest]digest.Digest{}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx) // the first failure ends the others
	g.SetLimit(Concurrency)
	ref := "pull-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	var below []string // the qcow2 layers listed before the one at hand
	for i, desc := range layers {
		var check func(path string) error
		if desc.MediaType == images.MediaTypeLayer {
			lower := slices.Clone(below)
			below = append(below, desc.Digest.Encoded())
			check = func(path string) error {
				vs, parent, err := p.Check(gctx, path, desc.Digest.String(), lower)
				if err != nil {
					return err
				}
				if gib(vs) > MaxVolumeGiB {
					return fmt.Errorf("layer %s: its disk is %d GiB, more than a volume may be (%d GiB): %w",
						desc.Digest, gib(vs), MaxVolumeGiB, errdefs.ErrInvalidArgument)
				}
				mu.Lock()
				defer mu.Unlock()
				sizes[desc.Digest] = vs
				if parent != "" {
					parents[desc.Digest] = digest.NewDigestFromEncoded(digest.SHA256, parent)
				}
				return nil
			}
		}
		g.Go(func() error {
			n, err := p.fetchBlob(gctx, repo, ref+strconv.Itoa(i), desc, skip[desc.Digest], stall, check, t)
			mu.Lock()
			defer mu.Unlock()
			fetched += n
			return err
		})
	}
	err = g.Wait()
	return sizes, parents, fetched, err
}

type fetcher interface {
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// fetchBlob stores one blob (one the store holds already is fetched and hashed, not
// stored again), or with skip only checks the stored one, and says how many bytes it
// fetched.
func (p *Puller) fetchBlob(ctx context.Context, repo fetcher, ref string, desc ocispec.Descriptor, skip bool, stall time.Duration, check func(string) error, t *tally) (int64, error) {
	if skip {
		return 0, p.Store.IngestVerified(ctx, ref, desc, nil, check)
	}
	ctx, cancel := context.WithCancelCause(ctx) // a stalled body ends this fetch
	defer cancel(nil)
	rc, err := repo.Fetch(ctx, desc)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	sr := newStallReader(rc, stall, cancel)
	defer sr.stop()
	cr := &countReader{r: t.reader(sr)}
	err = p.Store.IngestVerified(ctx, ref, desc, cr, check)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return cr.n, err
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// readVerified reads a small blob of at most max bytes and checks it against desc.
func readVerified(rc io.Reader, desc ocispec.Descriptor, max int64, what string) ([]byte, error) {
	if desc.Size > max {
		return nil, fmt.Errorf("the %s is %d bytes, more than kiln takes (%d): %w", what, desc.Size, max, errdefs.ErrInvalidArgument)
	}
	if desc.Size < 0 {
		return nil, fmt.Errorf("the %s has a negative size: %w", what, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	switch {
	case err != nil:
		return nil, err
	case int64(len(b)) > max:
		return nil, fmt.Errorf("the %s is more than %d bytes: %w", what, max, errdefs.ErrInvalidArgument)
	case int64(len(b)) != desc.Size:
		return nil, fmt.Errorf("the source sent %d bytes of the %s, which is %d bytes: %w", len(b), what, desc.Size, errdefs.ErrDataLoss)
	case digest.FromBytes(b) != desc.Digest:
		return nil, fmt.Errorf("the source sent a %s whose digest is %s, not %s: %w", what, digest.FromBytes(b), desc.Digest, errdefs.ErrDataLoss)
	}
	return b, nil
}

// parseManifest decodes a kiln image's manifest and checks its shape: an OCI image
// manifest of kiln's artifactType (or none, as kiln stored manifests before it wrote
// one), a kiln config, at most MaxLayers distinct sha256 layers of kiln's media
// types, each of a size kiln takes.
func parseManifest(b []byte, desc ocispec.Descriptor) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := decodeStrict(b, &m); err != nil {
		return m, fmt.Errorf("manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	mt := m.MediaType
	if mt == "" {
		mt = desc.MediaType
	}
	switch {
	case m.SchemaVersion != 2 || mt != ocispec.MediaTypeImageManifest:
		return m, fmt.Errorf("not a kiln image: its manifest is %q (schema %d), not an OCI image manifest: %w", mt, m.SchemaVersion, errdefs.ErrInvalidArgument)
	case m.ArtifactType != images.ArtifactType && m.ArtifactType != "": // "": stored before kiln wrote one
		return m, fmt.Errorf("not a kiln image: its artifactType is %q, not %q (kiln pulls images that kiln image push sent): %w",
			m.ArtifactType, images.ArtifactType, errdefs.ErrInvalidArgument)
	case m.Config.MediaType != images.MediaTypeConfig:
		return m, fmt.Errorf("not a kiln image: its config is %q, not %q (kiln pulls images that kiln image push sent): %w",
			m.Config.MediaType, images.MediaTypeConfig, errdefs.ErrInvalidArgument)
	case len(m.Layers) == 0:
		return m, fmt.Errorf("the manifest has no layers: %w", errdefs.ErrInvalidArgument)
	case len(m.Layers) > MaxLayers:
		return m, fmt.Errorf("the manifest has %d layers; kiln takes at most %d: %w", len(m.Layers), MaxLayers, errdefs.ErrInvalidArgument)
	}
	if err := checkDigest(m.Config.Digest); err != nil {
		return m, fmt.Errorf("config: %w", err)
	}
	seen := map[digest.Digest]bool{}
	for i, l := range m.Layers {
		if err := checkDigest(l.Digest); err != nil {
			return m, fmt.Errorf("layer %d: %w", i+1, err)
		}
		if seen[l.Digest] {
			return m, fmt.Errorf("layer %s is listed twice: %w", l.Digest, errdefs.ErrInvalidArgument)
		}
		seen[l.Digest] = true
		limit := int64(MaxLayerSize)
		switch l.MediaType {
		case images.MediaTypeLayer:
		case images.MediaTypeKernel, images.MediaTypeInitrd:
			limit = images.MaxBootFileSize
		case images.MediaTypeUEFIData:
			limit = images.MaxUEFIDataSize
		default:
			return m, fmt.Errorf("layer %s is %q, not one of kiln's media types: %w", l.Digest, l.MediaType, errdefs.ErrInvalidArgument)
		}
		if l.Size <= 0 || l.Size > limit {
			return m, fmt.Errorf("layer %s is %d bytes (want 1 to %d): %w", l.Digest, l.Size, limit, errdefs.ErrInvalidArgument)
		}
		if len(l.URLs) > 0 {
			return m, fmt.Errorf("layer %s names URLs elsewhere; kiln fetches layers from the registry only: %w", l.Digest, errdefs.ErrInvalidArgument)
		}
	}
	return m, nil
}

func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q is not a sha256 digest: %w", d, errdefs.ErrInvalidArgument)
	}
	return nil
}

var deviceName = regexp.MustCompile(`^/dev/vd[a-z]$`)

// parseConfig decodes a kiln image config and checks each field as register checks
// what a caller gives, and that what it names is among the manifest's layers.
func parseConfig(b []byte, layers []ocispec.Descriptor) (images.Config, error) {
	var cfg images.Config
	if err := decodeStrict(b, &cfg); err != nil {
		return cfg, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	media := map[digest.Digest]string{}
	for _, l := range layers {
		media[l.Digest] = l.MediaType
	}
	if err := images.CheckMachine(cfg.Architecture, cfg.BootMode, cfg.RootDeviceType); err != nil {
		return cfg, err
	}
	if err := images.CheckSSHUser(cfg.SSHUser); err != nil {
		return cfg, err
	}
	if err := images.CheckFirmware(cfg.BootMode, cfg.UEFIData != "", cfg.SecureBoot, cfg.TPMSupport); err != nil {
		return cfg, err
	}
	switch {
	case cfg.UEFIData != "" && media[cfg.UEFIData] != images.MediaTypeUEFIData:
		return cfg, fmt.Errorf("UEFI data %s is not a UEFI data layer of the manifest: %w", cfg.UEFIData, errdefs.ErrInvalidArgument)
	case len(cfg.Cmdline) > MaxCmdlineLen || strings.ContainsAny(cfg.Cmdline, "\x00\n\r"):
		return cfg, fmt.Errorf("kernel command line: at most %d bytes on one line: %w", MaxCmdlineLen, errdefs.ErrInvalidArgument)
	case (cfg.Kernel == "") != (cfg.Initrd == ""):
		return cfg, fmt.Errorf("a kernel needs an initrd and an initrd a kernel: %w", errdefs.ErrInvalidArgument)
	case cfg.Kernel != "" && media[cfg.Kernel] != images.MediaTypeKernel:
		return cfg, fmt.Errorf("kernel %s is not a kernel layer of the manifest: %w", cfg.Kernel, errdefs.ErrInvalidArgument)
	case cfg.Initrd != "" && media[cfg.Initrd] != images.MediaTypeInitrd:
		return cfg, fmt.Errorf("initrd %s is not an initrd layer of the manifest: %w", cfg.Initrd, errdefs.ErrInvalidArgument)
	case cfg.Cmdline != "" && cfg.Kernel == "":
		return cfg, fmt.Errorf("a kernel command line needs a kernel: %w", errdefs.ErrInvalidArgument)
	case len(cfg.BlockDeviceMappings) == 0 || len(cfg.BlockDeviceMappings) > MaxDevices:
		return cfg, fmt.Errorf("%d block device mappings (want 1 to %d): %w", len(cfg.BlockDeviceMappings), MaxDevices, errdefs.ErrInvalidArgument)
	}
	for _, l := range layers {
		if (l.MediaType == images.MediaTypeKernel && l.Digest != cfg.Kernel) || (l.MediaType == images.MediaTypeInitrd && l.Digest != cfg.Initrd) ||
			(l.MediaType == images.MediaTypeUEFIData && l.Digest != cfg.UEFIData) {
			return cfg, fmt.Errorf("layer %s is a %s the config does not name: %w", l.Digest, l.MediaType, errdefs.ErrInvalidArgument)
		}
	}
	devs := map[string]bool{}
	for _, m := range cfg.BlockDeviceMappings {
		switch {
		case !deviceName.MatchString(m.DeviceName):
			return cfg, fmt.Errorf("device name %q: must be /dev/vda to /dev/vdz: %w", m.DeviceName, errdefs.ErrInvalidArgument)
		case devs[m.DeviceName]:
			return cfg, fmt.Errorf("device %s is mapped twice: %w", m.DeviceName, errdefs.ErrInvalidArgument)
		case m.EBS == nil:
			return cfg, fmt.Errorf("device %s has no volume: %w", m.DeviceName, errdefs.ErrInvalidArgument)
		case media[m.EBS.Layer] != images.MediaTypeLayer:
			return cfg, fmt.Errorf("device %s: layer %q is not a qcow2 layer of the manifest: %w", m.DeviceName, m.EBS.Layer, errdefs.ErrInvalidArgument)
		case m.EBS.VolumeSize < 0 || m.EBS.VolumeSize > MaxVolumeGiB:
			return cfg, fmt.Errorf("device %s: volume size %d GiB (at most %d): %w", m.DeviceName, m.EBS.VolumeSize, MaxVolumeGiB, errdefs.ErrInvalidArgument)
		case m.EBS.Encrypted:
			return cfg, fmt.Errorf("device %s is encrypted; kiln keeps disks unencrypted: %w", m.DeviceName, errdefs.ErrInvalidArgument)
		}
		devs[m.DeviceName] = true
	}
	if !devs[cfg.RootDeviceName] {
		return cfg, fmt.Errorf("root device %q is not one of the mapped devices: %w", cfg.RootDeviceName, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

// gib rounds a size in bytes up to whole GiB (at least 1), as volume sizes are given.
func gib(n int64) int64 {
	return max((n+(1<<30-1))>>30, 1)
}

// DefaultName is the image name a pull gives when none is asked for: the repository's
// last part and the tag (or the digest's first 12 hex digits), with any character an
// image name cannot hold made a '-'.
func DefaultName(repository, tag string) string {
	base := repository[strings.LastIndexByte(repository, '/')+1:]
	if d, err := digest.Parse(tag); err == nil {
		tag = d.Encoded()[:12]
	}
	name := []rune(base + "-" + tag)
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("()[].-'@_", c)) {
			name[i] = '-'
		}
	}
	if len(name) > images.MaxNameLen {
		name = name[:images.MaxNameLen]
	}
	return string(name)
}
