package oci

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"

	"kiln/images"
)

// Bounds on an OCI image layout tar given to Import.
const (
	// MaxLayoutEntries bounds the entries of the tar: a kiln image's blobs and the
	// layout's own files, with room.
	MaxLayoutEntries = 4 * MaxLayers
	// MaxIndexSize bounds index.json and oci-layout.
	MaxIndexSize = 1 << 20
)

// Export writes the available image im as an OCI image layout tar (oci-layout,
// index.json naming its one manifest, blobs/sha256/…) to w: the manifest, config and
// layers exactly as stored, so every digest is kept. It returns the manifest's
// descriptor and the tar's bytes.
func Export(ctx context.Context, s *images.Store, im *images.Image, w io.Writer) (ocispec.Descriptor, int64, error) {
	if im.State != images.StateAvailable || im.Manifest == "" {
		return ocispec.Descriptor{}, 0, fmt.Errorf("image %s is %s; only an available image can be exported: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
	}
	release := s.Hold()
	defer release()
	mb, err := s.ReadBlob(ctx, im.Manifest, MaxManifestSize)
	if err != nil {
		return ocispec.Descriptor{}, 0, fmt.Errorf("image %s: manifest: %w", im.ID, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return ocispec.Descriptor{}, 0, fmt.Errorf("image %s: manifest %s: %v: %w", im.ID, im.Manifest, err, errdefs.ErrDataLoss)
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: m.ArtifactType, Digest: im.Manifest, Size: int64(len(mb)),
		Annotations: map[string]string{ocispec.AnnotationRefName: im.ID}}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{mdesc}}
	index.SchemaVersion = 2
	ib, err := json.Marshal(index)
	if err != nil {
		return ocispec.Descriptor{}, 0, err
	}
	lb, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	cw := &images.CountingWriter{W: w}
	tw := tar.NewWriter(cw)
	mtime := time.Unix(0, 0)
	file := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o444, ModTime: mtime, Format: tar.FormatPAX})
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{ocispec.ImageLayoutFile, lb}, {ocispec.ImageIndexFile, ib}, {blobName(mdesc.Digest), mb}} {
		if err := file(f.name, int64(len(f.b))); err != nil {
			return mdesc, cw.N, err
		}
		if _, err := tw.Write(f.b); err != nil {
			return mdesc, cw.N, err
		}
	}
	for _, d := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := ctx.Err(); err != nil {
			return mdesc, cw.N, err
		}
		rc, size, err := s.Blob(ctx, d.Digest)
		if err != nil {
			return mdesc, cw.N, fmt.Errorf("image %s: blob %s: %w", im.ID, d.Digest, err)
		}
		if size != d.Size {
			rc.Close()
			return mdesc, cw.N, fmt.Errorf("blob %s is %d bytes in the store, the manifest says %d: %w", d.Digest, size, d.Size, errdefs.ErrDataLoss)
		}
		err = file(blobName(d.Digest), size)
		if err == nil {
			_, err = io.Copy(tw, rc)
		}
		rc.Close()
		if err != nil {
			return mdesc, cw.N, err
		}
	}
	if err := tw.Close(); err != nil {
		return mdesc, cw.N, err
	}
	log.G(ctx).WithField("image", im.ID).WithField("digest", mdesc.Digest).WithField("bytes", cw.N).Info("exported")
	return mdesc, cw.N, nil
}

func blobName(d digest.Digest) string {
	return path.Join(ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// Import reads a kiln image from an OCI image layout tar of size bytes (as Export
// writes, or any tool that copies a kiln image into one, such as skopeo's oci-archive)
// through oras-go's read-only OCI store, and stores it exactly as Pull does, with the
// same checks: the tar is one more untrusted source. The layout must name one manifest;
// req.Remote is not used but for Progress. name says where the tar came from, for the
// record (SourceRef) and messages.
func (p *Puller) Import(ctx context.Context, r io.ReaderAt, size int64, name string, req PullRequest) (*images.Image, error) {
	bad := func(err error) error {
		return fmt.Errorf("import %s: %v (kiln image export writes an OCI image layout tar kiln imports): %w", name, err, errdefs.ErrInvalidArgument)
	}
	fsys, err := newTarFS(r, size)
	if err != nil {
		return nil, bad(err)
	}
	// index.json bounded and naming one manifest before oras-go reads it.
	ib, err := fs.ReadFile(fsys, ocispec.ImageIndexFile)
	if err != nil {
		return nil, bad(err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(ib, &index); err != nil {
		return nil, bad(fmt.Errorf("index.json: %v", err))
	}
	if len(index.Manifests) != 1 {
		return nil, bad(fmt.Errorf("index.json names %d manifests; kiln imports a layout of one image", len(index.Manifests)))
	}
	mdesc := index.Manifests[0]
	if mdesc.MediaType != ocispec.MediaTypeImageManifest || mdesc.Size <= 0 || mdesc.Size > MaxManifestSize || checkDigest(mdesc.Digest) != nil {
		return nil, bad(fmt.Errorf("index.json's manifest is %q of %d bytes (%s); want a kiln image's OCI image manifest", mdesc.MediaType, mdesc.Size, mdesc.Digest))
	}
	// oci-layout says the version; oras-go's NewFromFS is not used: it walks the whole
	// graph the manifest names before kiln checks anything, reading any blob declared a
	// manifest whole into memory at the size the tar claims (2^62 bytes: kilnd dies). The
	// storage alone fetches what kiln asks for, and kiln reads it bounded.
	lb, err := fs.ReadFile(fsys, ocispec.ImageLayoutFile)
	if err != nil {
		return nil, bad(err)
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(lb, &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		return nil, bad(fmt.Errorf("oci-layout %.64q: want {\"imageLayoutVersion\": %q}", lb, ocispec.ImageLayoutVersion))
	}
	store := oci.NewStorageFromFS(fsys)
	ref := "oci-archive:" + name
	return p.pull(ctx, source{
		what: "import", ref: ref, from: "imported from", sourceRef: ref,
		manifest: func(ctx context.Context) (ocispec.Descriptor, io.ReadCloser, error) {
			rc, err := store.Fetch(ctx, mdesc)
			return mdesc, rc, err
		},
		blobs: store,
		err: func(err error) error {
			switch {
			case errors.Is(err, errdef.ErrNotFound):
				return fmt.Errorf("import %s: the tar lacks a blob its manifest names: %v: %w", name, err, errdefs.ErrInvalidArgument)
			case errdefs.IsDataLoss(err): // the caller's own file is not what it says: a bad argument
				return fmt.Errorf("import %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
			case errors.Is(errdefs.Resolve(err), errdefs.ErrUnknown):
				return fmt.Errorf("import %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("import %s: %w", name, err)
		},
	}, req)
}

// tarFS is a tar's regular files as an fs.FS, read in place (no copy), for oras-go's
// read-only OCI store.
type tarFS struct {
	r     io.ReaderAt
	files map[string]tarEntry
}

type tarEntry struct{ off, size int64 }

func newTarFS(r io.ReaderAt, size int64) (*tarFS, error) {
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	t := &tarFS{r: r, files: map[string]tarEntry{}}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a tar: %v", err)
		}
		if len(t.files) >= MaxLayoutEntries {
			return nil, fmt.Errorf("more than %d files in the tar", MaxLayoutEntries)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(h.Name)
		if !fs.ValidPath(name) {
			return nil, fmt.Errorf("tar entry %q is not a relative path", h.Name)
		}
		off, err := sr.Seek(0, io.SeekCurrent) // the data starts where the header ended
		if err != nil {
			return nil, err
		}
		if h.Size < 0 || off+h.Size > size {
			return nil, fmt.Errorf("tar entry %s runs past the end of the tar", name)
		}
		if (name == ocispec.ImageIndexFile || name == ocispec.ImageLayoutFile) && h.Size > MaxIndexSize {
			return nil, fmt.Errorf("%s is %d bytes, more than %d", name, h.Size, MaxIndexSize)
		}
		t.files[name] = tarEntry{off, h.Size}
	}
	return t, nil
}

func (t *tarFS) Open(name string) (fs.File, error) {
	e, ok := t.files[name]
	if !ok || !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &tarFile{SectionReader: io.NewSectionReader(t.r, e.off, e.size), name: name}, nil
}

type tarFile struct {
	*io.SectionReader
	name string
}

func (f *tarFile) Stat() (fs.FileInfo, error) { return tarInfo{path.Base(f.name), f.Size()}, nil }
func (f *tarFile) Close() error               { return nil }

type tarInfo struct {
	name string
	size int64
}

func (i tarInfo) Name() string       { return i.name }
func (i tarInfo) Size() int64        { return i.size }
func (i tarInfo) Mode() fs.FileMode  { return 0o444 }
func (i tarInfo) ModTime() time.Time { return time.Time{} }
func (i tarInfo) IsDir() bool        { return false }
func (i tarInfo) Sys() any           { return nil }
