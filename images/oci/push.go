package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"kiln/images"
)

// PushResult is what a push did.
type PushResult struct {
	Reference    string // as pushed, with the tag
	Digest       digest.Digest
	Blobs        int   // the config and layers
	BlobsPushed  int   // those the registry lacked
	BytesPushed  int64 // their bytes
	BlobsSkipped int   // those it had
	BlobsMounted int   // those it lacked and took from another of its repositories
}

// Push sends the available image im from store s to the registry: its manifest, config
// and layers exactly as stored (so the manifest keeps its digest), each blob only when
// the registry lacks it (a HEAD first), Concurrency at a time, then the manifest under
// the reference's tag, which the image's record then keeps (PushedTo). A blob the
// repository lacks is first mounted from the repository the image was last pushed to or
// pulled from (or, for an image made from another, that one's), when that is another
// repository of the same registry; a registry that does not mount gets it uploaded.
// Errors wrap errdefs classes as Pull's do.
func Push(ctx context.Context, s *images.Store, im *images.Image, r Remote) (PushResult, error) {
	repo, tag, err := r.repository()
	if err != nil {
		return PushResult{}, err
	}
	ref := repo.Reference.Registry + "/" + repo.Reference.Repository + tagPart(tag)
	if im.State != images.StateAvailable || im.Manifest == "" {
		return PushResult{}, fmt.Errorf("image %s is %s; only an available image can be pushed: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
	}
	release := s.Hold() // its blobs stay while they are read
	defer release()
	mb, err := s.ReadBlob(ctx, im.Manifest, MaxManifestSize)
	if err != nil {
		return PushResult{}, fmt.Errorf("image %s: manifest: %w", im.ID, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return PushResult{}, fmt.Errorf("image %s: manifest %s: %v: %w", im.ID, im.Manifest, err, errdefs.ErrDataLoss)
	}
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: m.ArtifactType, Digest: im.Manifest, Size: int64(len(mb))}
	if d, derr := digest.Parse(tag); derr == nil && d != mdesc.Digest {
		return PushResult{}, fmt.Errorf("push %s: the image's manifest is %s, not the digest the reference names: push by tag: %w", ref, mdesc.Digest, errdefs.ErrInvalidArgument)
	}
	res := PushResult{Reference: ref, Digest: mdesc.Digest}
	from := ""
	if r.Caller == im.OwnerID {
		from = mountSource(s, im, repo.Reference.Registry, repo.Reference.Repository)
	}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	res.Blobs = len(blobs)
	start := time.Now()

	// What the repository lacks (a HEAD each), so the progress counts what travels.
	t := &tally{fn: r.Progress}
	missing := make([]bool, len(blobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(Concurrency)
	for i, desc := range blobs {
		g.Go(func() error {
			ok, err := repo.Blobs().Exists(gctx, desc)
			missing[i] = !ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return res, registryError("push", ref, err)
	}
	var total int64
	for i, desc := range blobs {
		if missing[i] {
			total += desc.Size
		} else {
			res.BlobsSkipped++
		}
	}
	t.add(0, total)

	var mu sync.Mutex
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(Concurrency)
	for i, desc := range blobs {
		if !missing[i] {
			continue
		}
		g.Go(func() error {
			how, err := pushBlob(gctx, s, repo, desc, from, t)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			switch how {
			case sent:
				res.BlobsPushed++
				res.BytesPushed += desc.Size
			case mounted:
				res.BlobsMounted++
				t.add(desc.Size, 0)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, registryError("push", ref, err)
	}
	if _, derr := digest.Parse(tag); derr == nil {
		err = repo.Manifests().Push(ctx, mdesc, bytes.NewReader(mb))
	} else {
		err = repo.PushReference(ctx, mdesc, bytes.NewReader(mb), tag)
	}
	if err != nil {
		return res, registryError("push", ref, err)
	}
	if r.Caller == im.OwnerID {
		if _, err := s.UpdateImage(im.ID, func(cur *images.Image) error { cur.PushedTo = ref; return nil }); err != nil {
			log.G(ctx).WithError(err).WithField("image", im.ID).Warn("where the image was pushed is not recorded")
		}
	}
	log.G(ctx).WithField("image", im.ID).WithField("reference", ref).WithField("digest", mdesc.Digest).
		WithField("pushed", res.BlobsPushed).WithField("mounted", res.BlobsMounted).WithField("bytes", res.BytesPushed).WithField("dur", time.Since(start)).Info("pushed")
	return res, nil
}

// mountSource is the repository of registry, other than repository, a push of im may
// mount blobs from: where im was last pushed to or pulled from, else where the image
// it was made from was ("" when none).
func mountSource(s *images.Store, im *images.Image, registry, repository string) string {
	refs := []string{im.PushedTo, im.SourceRef}
	if im.SourceImageID != "" {
		if src, err := s.Image(im.SourceImageID); err == nil {
			refs = append(refs, src.PushedTo, src.SourceRef)
		}
	}
	for _, ref := range refs {
		if from := mountFrom(ref, registry, repository); from != "" {
			return from
		}
	}
	return ""
}

// mountFrom is the repository of registry, other than repository, that sourceRef
// names ("" when none).
func mountFrom(sourceRef, registry, repository string) string {
	if sourceRef == "" {
		return ""
	}
	r, err := remote.NewRepository(sourceRef)
	if err != nil || r.Reference.Registry != registry || r.Reference.Repository == repository {
		return ""
	}
	return r.Reference.Repository
}

type pushed int

const (
	present pushed = iota // the repository had it
	sent                  // uploaded
	mounted               // mounted from another repository of the registry
)

// pushBlob sends one blob the repository lacks, mounting it from the repository from
// (when not "") if the registry can, and says what it did; t counts the bytes sent.
func pushBlob(ctx context.Context, s *images.Store, repo *remote.Repository, desc ocispec.Descriptor, from string, t *tally) (pushed, error) {
	open := func() (io.ReadCloser, error) {
		rc, size, err := s.Blob(ctx, desc.Digest)
		if err != nil {
			return nil, err
		}
		if size != desc.Size {
			rc.Close()
			return nil, fmt.Errorf("blob %s is %d bytes in the store, the manifest says %d: %w", desc.Digest, size, desc.Size, errdefs.ErrDataLoss)
		}
		return readCloser{t.reader(rc), rc}, nil
	}
	if m, ok := repo.Blobs().(registry.Mounter); ok && from != "" {
		uploaded := false
		err := m.Mount(ctx, desc, from, func() (io.ReadCloser, error) {
			uploaded = true
			return open()
		})
		switch {
		case err == nil && uploaded:
			return sent, nil
		case err == nil:
			return mounted, nil
		case uploaded || ctx.Err() != nil:
			return present, err
		}
		// A registry that refuses the mount itself (not the upload it may offer instead),
		// as one whose tokens do not reach the other repository may: a plain upload.
		log.G(ctx).WithError(err).WithField("digest", desc.Digest).WithField("from", from).Debug("mount refused; uploading")
	}
	rc, err := open()
	if err != nil {
		return present, err
	}
	defer rc.Close()
	if err := repo.Blobs().Push(ctx, desc, rc); err != nil {
		return present, err
	}
	return sent, nil
}
