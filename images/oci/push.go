package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

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
}

// Push sends the available image im from store s to the registry: its manifest, config
// and layers exactly as stored (so the manifest keeps its digest), each blob only when
// the registry lacks it (a HEAD first), Concurrency at a time, then the manifest under
// the reference's tag. Errors wrap errdefs classes as Pull's do.
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
	mdesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: im.Manifest, Size: int64(len(mb))}
	if d, derr := digest.Parse(tag); derr == nil && d != mdesc.Digest {
		return PushResult{}, fmt.Errorf("push %s: the image's manifest is %s, not the digest the reference names: push by tag: %w", ref, mdesc.Digest, errdefs.ErrInvalidArgument)
	}
	res := PushResult{Reference: ref, Digest: mdesc.Digest}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	res.Blobs = len(blobs)
	start := time.Now()

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(Concurrency)
	for _, desc := range blobs {
		g.Go(func() error {
			pushed, err := pushBlob(gctx, s, repo, desc)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			if pushed {
				res.BlobsPushed++
				res.BytesPushed += desc.Size
			} else {
				res.BlobsSkipped++
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
	log.G(ctx).WithField("image", im.ID).WithField("reference", ref).WithField("digest", mdesc.Digest).
		WithField("pushed", res.BlobsPushed).WithField("bytes", res.BytesPushed).WithField("dur", time.Since(start)).Info("pushed")
	return res, nil
}

// pushBlob sends one blob unless the registry has it, and says whether it sent it.
func pushBlob(ctx context.Context, s *images.Store, repo *remote.Repository, desc ocispec.Descriptor) (bool, error) {
	ok, err := repo.Blobs().Exists(ctx, desc)
	if err != nil {
		return false, err
	}
	if ok {
		return false, nil
	}
	rc, size, err := s.Blob(ctx, desc.Digest)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	if size != desc.Size {
		return false, fmt.Errorf("blob %s is %d bytes in the store, the manifest says %d: %w", desc.Digest, size, desc.Size, errdefs.ErrDataLoss)
	}
	if err := repo.Blobs().Push(ctx, desc, rc); err != nil {
		return false, err
	}
	return true, nil
}
