package images

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/gc"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	nodeBlob gc.ResourceType = iota + 1
	nodeManifest
)

// GCResult says what a collection removed.
type GCResult struct {
	BlobsRemoved   int   `json:"blobsRemoved"`
	BytesFreed     int64 `json:"bytesFreed"`
	IngestsRemoved int   `json:"ingestsRemoved"`
}

// GC deletes every blob that no image, snapshot or extra root reaches, and every
// abandoned ingest. extra (when not nil) names the layers that something outside the
// store's records needs (the volumes' chains); it is called once GC has the store to
// itself, so a volume made under a Hold before that is counted. GC waits (until ctx
// ends: an errdefs.ErrUnavailable error then) for holds to be released, without holding
// back new ones meanwhile, and keeps new ones out only while it runs.
func (s *Store) GC(ctx context.Context, extra func() []digest.Digest) (GCResult, error) {
	if err := s.lockForGC(ctx); err != nil {
		return GCResult{}, err
	}
	defer s.gcLock.Unlock()

	var roots []gc.Node
	s.mu.RLock()
	for _, im := range s.images {
		if im.Manifest != "" {
			roots = append(roots, gc.Node{Type: nodeManifest, Key: im.Manifest.String()})
		}
	}
	for _, sn := range s.snapshots {
		for _, d := range sn.Chain {
			roots = append(roots, gc.Node{Type: nodeBlob, Key: d.String()})
		}
	}
	s.mu.RUnlock()
	if extra != nil {
		for _, d := range extra() {
			roots = append(roots, gc.Node{Type: nodeBlob, Key: d.String()})
		}
	}

	reachable, err := gc.Tricolor(roots, func(n gc.Node) ([]gc.Node, error) {
		if n.Type != nodeManifest {
			return nil, nil
		}
		var m ocispec.Manifest
		if err := s.ReadJSON(ctx, digest.Digest(n.Key), &m); err != nil {
			return nil, fmt.Errorf("gc: manifest: %w", err)
		}
		refs := []gc.Node{{Type: nodeBlob, Key: m.Config.Digest.String()}}
		for _, l := range m.Layers {
			refs = append(refs, gc.Node{Type: nodeBlob, Key: l.Digest.String()})
		}
		return refs, nil
	})
	if err != nil {
		return GCResult{}, err
	}
	keep := map[string]bool{}
	for n := range reachable {
		keep[n.Key] = true
	}

	var res GCResult
	var drop []content.Info
	if err := s.content.Walk(ctx, func(info content.Info) error {
		if !keep[info.Digest.String()] {
			drop = append(drop, info)
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("gc: walk: %w", err)
	}
	for _, info := range drop {
		if err := s.content.Delete(ctx, info.Digest); err != nil {
			return res, fmt.Errorf("gc: delete %s: %w", info.Digest, err)
		}
		log.G(ctx).WithField("digest", info.Digest).WithField("size", info.Size).Debug("gc: removed blob")
		res.BlobsRemoved++
		res.BytesFreed += info.Size
	}

	// No ingest is active while GC holds the lock: every one left is abandoned.
	statuses, err := s.content.ListStatuses(ctx)
	if err != nil {
		return res, fmt.Errorf("gc: ingests: %w", err)
	}
	for _, st := range statuses {
		if err := s.content.Abort(ctx, st.Ref); err != nil {
			return res, fmt.Errorf("gc: remove ingest %s: %w", st.Ref, err)
		}
		res.IngestsRemoved++
		res.BytesFreed += st.Offset
	}
	return res, nil
}

// gcPoll is how often a waiting GC tries for the store.
const gcPoll = 20 * time.Millisecond

// lockForGC takes the store for GC without queueing for it: an RWMutex's queued writer
// holds back every new reader, so a GC waiting for a long register would stall every
// launch and register behind it (3.9 s seen) though it does not run yet. It tries
// instead, until ctx ends; a GC then runs in the first moment no hold is taken, which
// a stream of overlapping holds can put off until ctx ends.
func (s *Store) lockForGC(ctx context.Context) error {
	for !s.gcLock.TryLock() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("gc: images and volumes are being made; try again when they are done (%w): %w", context.Cause(ctx), errdefs.ErrUnavailable)
		case <-time.After(gcPoll):
		}
	}
	return nil
}
