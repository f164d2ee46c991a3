package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/images"
)

// Flatten writes the disk a chain of layers holds (their files, bottom to top) as one
// self-contained qcow2 file at dst; kilnd gives volumes.Tool.Flatten.
type Flatten func(ctx context.Context, layers []string, dst string) error

// ContainerDisk is the disk file's path inside a containerDisk's layer, and its owner
// (KubeVirt's qemu user), as KubeVirt's containerDisk images hold it.
const (
	ContainerDiskPath = "disk/disk.qcow2"
	containerDiskUID  = 107
)

// PushContainerDisk sends the image's root device as a KubeVirt containerDisk: an OCI
// image of one uncompressed tar layer holding the device's whole chain flattened into
// one qcow2 file at disk/disk.qcow2 (owner 107:107, mode 0440), with a plain OCI image
// config (linux, the image's architecture). The flattened file and the tar are made
// in tmpDir (kilnd's own) and removed at the end. Only the root device goes (a
// containerDisk holds one disk; a kernel and initrd do not travel).
func PushContainerDisk(ctx context.Context, s *images.Store, im *images.Image, r Remote, flatten Flatten, tmpDir string) (PushResult, error) {
	repo, tag, err := r.repository()
	if err != nil {
		return PushResult{}, err
	}
	ref := repo.Reference.Registry + "/" + repo.Reference.Repository + tagPart(tag)
	if _, derr := digest.Parse(tag); derr == nil {
		return PushResult{}, fmt.Errorf("push %s: a containerDisk is made at each push, its digest unknown beforehand: push it by tag: %w", ref, errdefs.ErrInvalidArgument)
	}
	if im.State != images.StateAvailable {
		return PushResult{}, fmt.Errorf("image %s is %s; only an available image can be pushed: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
	}
	var root *images.EBS
	for _, m := range im.BlockDeviceMappings {
		if m.DeviceName == im.RootDeviceName {
			root = m.EBS
		}
	}
	if root == nil {
		return PushResult{}, fmt.Errorf("image %s has no volume at its root device %s: %w", im.ID, im.RootDeviceName, errdefs.ErrFailedPrecondition)
	}
	sn, err := s.Snapshot(root.SnapshotID)
	if err != nil {
		return PushResult{}, fmt.Errorf("image %s: root device: %w", im.ID, err)
	}
	release := s.Hold()
	defer release()
	// The flattened disk and the tar holding it: at most twice the chain's bytes.
	var need int64
	for _, d := range sn.Chain {
		n, err := s.BlobSize(ctx, d)
		if err != nil {
			return PushResult{}, fmt.Errorf("image %s: root device: %w", im.ID, err)
		}
		need += 2 * n
	}
	if free, err := s.Free(); err == nil && need+FreeReserve > free {
		return PushResult{}, fmt.Errorf("image %s: a containerDisk of it needs about %d MiB while it is made, and the store's filesystem has %d MiB free: %w",
			im.ID, need>>20, free>>20, errdefs.ErrResourceExhausted)
	}
	dir, err := os.MkdirTemp(tmpDir, "containerdisk-")
	if err != nil {
		return PushResult{}, err
	}
	defer os.RemoveAll(dir)
	var chain []string
	for _, d := range sn.Chain {
		chain = append(chain, s.BlobPath(d))
	}
	disk := filepath.Join(dir, "disk.qcow2")
	if err := flatten(ctx, chain, disk); err != nil {
		return PushResult{}, fmt.Errorf("image %s: flatten its root device: %w", im.ID, err)
	}
	layer, err := writeDiskTar(disk, filepath.Join(dir, "layer.tar"))
	if err != nil {
		return PushResult{}, fmt.Errorf("image %s: containerDisk layer: %w", im.ID, err)
	}
	arch := map[string]string{"x86_64": "amd64", "arm64": "arm64"}[im.Architecture]
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: arch, OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}},
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return PushResult{}, err
	}
	cdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cb), Size: int64(len(cb))}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: []ocispec.Descriptor{layer},
		Annotations: map[string]string{"org.opencontainers.image.title": im.Name, "io.kiln.image.id": im.ID}}
	m.SchemaVersion = 2
	mb, err := json.Marshal(m)
	if err != nil {
		return PushResult{}, err
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	res := PushResult{Reference: ref, Digest: mdesc.Digest, Blobs: 2}
	start := time.Now()
	t := &tally{fn: r.Progress}
	t.add(0, cdesc.Size+layer.Size)
	for _, b := range []struct {
		desc ocispec.Descriptor
		open func() (io.ReadCloser, error)
	}{
		{cdesc, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cb)), nil }},
		{layer, func() (io.ReadCloser, error) { return os.Open(filepath.Join(dir, "layer.tar")) }},
	} {
		ok, err := repo.Blobs().Exists(ctx, b.desc)
		if err != nil {
			return res, registryError("push", ref, err)
		}
		if ok {
			res.BlobsSkipped++
			t.add(b.desc.Size, 0)
			continue
		}
		rc, err := b.open()
		if err != nil {
			return res, err
		}
		err = repo.Blobs().Push(ctx, b.desc, t.reader(rc))
		rc.Close()
		if err != nil {
			return res, registryError("push", ref, err)
		}
		res.BlobsPushed++
		res.BytesPushed += b.desc.Size
	}
	if err := repo.PushReference(ctx, mdesc, bytes.NewReader(mb), tag); err != nil {
		return res, registryError("push", ref, err)
	}
	log.G(ctx).WithField("image", im.ID).WithField("reference", ref).WithField("digest", mdesc.Digest).
		WithField("bytes", res.BytesPushed).WithField("dur", time.Since(start)).Info("pushed as a containerDisk")
	return res, nil
}

// writeDiskTar writes a tar holding disk as ContainerDiskPath, hashing it as it goes.
func writeDiskTar(disk, out string) (ocispec.Descriptor, error) {
	in, err := os.Open(disk)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	mtime := time.Unix(0, 0)
	for _, hdr := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "disk/", Mode: 0o555, Uid: containerDiskUID, Gid: containerDiskUID, ModTime: mtime, Format: tar.FormatPAX},
		{Typeflag: tar.TypeReg, Name: ContainerDiskPath, Mode: 0o440, Size: st.Size(), Uid: containerDiskUID, Gid: containerDiskUID, ModTime: mtime, Format: tar.FormatPAX},
	} {
		if err := tw.WriteHeader(hdr); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	if _, err := io.Copy(tw, in); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := tw.Close(); err != nil {
		return ocispec.Descriptor{}, err
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer,
		Digest: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))), Size: size}, nil
}
