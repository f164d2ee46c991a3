package vols

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"kiln/daemon/api"
	"kiln/daemon/quota"
	"kiln/daemon/record"
	"kiln/images"
	"kiln/internal/ids"
	"kiln/volumes"
)

// Set keeps every volume's record (in the DB, and cached), its files, the claims of
// requests working on one, and the volume quotas. It is safe for concurrent use; what it
// hands out are copies.
type Set struct {
	db     *record.DB
	layout record.Layout
	store  *images.Store
	tool   volumes.Tool
	quota  func(user string) quota.Quota

	mu  sync.Mutex
	all map[string]*record.Volume
	// reservedN and reservedGiB are the volumes admitted (Admit) and not yet in all,
	// and their sizes, per owner.
	reservedN, reservedGiB quota.Reservation
	// busy are the volumes an attach, detach or delete is working on (Claim).
	busy map[string]bool
}

// New makes the set of the volumes loaded from db.
func New(db *record.DB, layout record.Layout, store *images.Store, tool volumes.Tool, q func(user string) quota.Quota, loaded []record.Volume) *Set {
	s := &Set{db: db, layout: layout, store: store, tool: tool, quota: q, all: map[string]*record.Volume{}, busy: map[string]bool{}}
	for i := range loaded {
		s.all[loaded[i].ID] = &loaded[i]
	}
	return s
}

// clone is a copy of v that shares nothing with it.
func clone(v *record.Volume) *record.Volume {
	c := *v
	c.Chain = slices.Clone(v.Chain)
	c.Frozen = slices.Clone(v.Frozen)
	return &c
}

// Put writes a volume's record, then keeps a copy. The tags of a volume the set has are
// the set's (Tag changes them): v's count only for a new volume, so a request that
// worked on a copy never undoes a tag change made meanwhile.
func (s *Set) Put(v *record.Volume) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := clone(v)
	if cur := s.all[v.ID]; cur != nil {
		c.Tags = cur.Tags
	}
	if err := s.db.PutVolume(c); err != nil {
		return err
	}
	s.all[v.ID] = c
	return nil
}

// Tag changes the tags of a volume the caller may see: change gets its tags and returns
// the new ones (it must not change the map it gets). The answer is the volume then.
func (s *Set) Tag(ref string, visible func(owner string) bool, change func(map[string]string) (map[string]string, error)) (api.Volume, error) {
	id, err := s.Resolve(ref, visible)
	if err != nil {
		return api.Volume{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.all[id]
	if cur == nil {
		return api.Volume{}, ids.NotFound("volume", ref, nil) // deleted meanwhile
	}
	c := clone(cur)
	if c.Tags, err = change(cur.Tags); err != nil {
		return api.Volume{}, err
	}
	if err := s.db.PutVolume(c); err != nil {
		return api.Volume{}, err
	}
	s.all[id] = c
	return View(c), nil
}

// Delete removes a volume's files and record.
func (s *Set) Delete(v *record.Volume) error {
	for _, f := range v.Frozen {
		os.Remove(filepath.Join(s.layout.VolumeDir(v), f.Name))
	}
	if err := os.Remove(s.layout.VolumePath(v)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	if err := s.db.DeleteVolume(v.ID); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.all, v.ID)
	s.mu.Unlock()
	return nil
}

// Get is a copy of the volume's record, or nil.
func (s *Set) Get(id string) *record.Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.all[id]; v != nil {
		return clone(v)
	}
	return nil
}

// Select are copies of the volumes keep accepts, by id.
func (s *Set) Select(keep func(v *record.Volume) bool) []*record.Volume {
	s.mu.Lock()
	var out []*record.Volume
	for _, v := range s.all {
		if keep(v) {
			out = append(out, clone(v))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *record.Volume) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Layers are the layers every volume stands on, for GC.
func (s *Set) Layers() []digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []digest.Digest
	for _, v := range s.all {
		out = append(out, v.Chain...)
	}
	return out
}

// visible finds a volume the caller may see.
func (s *Set) visible(ref string, visible func(owner string) bool) (*record.Volume, error) {
	id, err := s.Resolve(ref, visible)
	if err != nil {
		return nil, err
	}
	if v := s.Get(id); v != nil {
		return v, nil
	}
	return nil, ids.NotFound("volume", ref, nil) // deleted meanwhile
}

// Resolve is the id of the volume ref names among those the caller may see: its id or
// the start of it (vol-3f2a).
func (s *Set) Resolve(ref string, visible func(owner string) bool) (string, error) {
	s.mu.Lock()
	var refs []ids.Ref
	for _, v := range s.all {
		if visible(v.OwnerID) {
			refs = append(refs, ids.Ref{ID: v.ID, Owner: v.OwnerID})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(refs, func(a, b ids.Ref) int { return strings.Compare(a.ID, b.ID) })
	r, err := ids.Pick("volume", record.VolumePrefix, ref, "", refs, func(r ids.Ref) ids.Ref { return r })
	return r.ID, err
}

// List lists the volumes the caller may see, by id.
func (s *Set) List(visible func(owner string) bool) []api.Volume {
	out := []api.Volume{}
	for _, v := range s.Select(func(v *record.Volume) bool { return visible(v.OwnerID) }) {
		out = append(out, View(v))
	}
	return out
}

// Inspect is a volume the caller may see.
func (s *Set) Inspect(id string, visible func(owner string) bool) (api.Volume, error) {
	v, err := s.visible(id, visible)
	if err != nil {
		return api.Volume{}, err
	}
	return View(v), nil
}

// View is the API's view of a volume.
func View(v *record.Volume) api.Volume {
	out := api.Volume{ID: v.ID, OwnerID: v.OwnerID, State: "available", SizeGiB: v.SizeGiB, SnapshotID: v.SnapshotID,
		InstanceID: v.InstanceID, DeviceName: v.DeviceName, DeleteOnTermination: v.DeleteOnTermination, CreateTime: v.CreateTime,
		Tags: v.Tags}
	if out.Tags == nil {
		out.Tags = map[string]string{}
	}
	if v.InstanceID != "" {
		out.State = "in-use"
	}
	return out
}

// Create makes a standalone volume of owner's: blank, or over a snapshot (sn, one the
// caller may see), sizeGiB large (0: the snapshot's size), with tags (checked here).
func (s *Set) Create(ctx context.Context, owner string, sizeGiB int64, sn *images.Snapshot, tags map[string]string) (api.Volume, error) {
	if err := images.CheckTags(tags, 0); err != nil {
		return api.Volume{}, err
	}
	v := &record.Volume{ID: ids.NewID(record.VolumePrefix), OwnerID: owner, Standalone: true, SizeGiB: sizeGiB, CreateTime: time.Now().UTC(),
		Tags: tags}
	release := s.store.Hold()
	defer release()
	var chain []digest.Digest
	if sn != nil {
		if v.SizeGiB == 0 {
			v.SizeGiB = sn.VolumeSize
		}
		if v.SizeGiB < sn.VolumeSize {
			return api.Volume{}, fmt.Errorf("size %d GiB is less than snapshot %s (%d GiB): %w", v.SizeGiB, sn.ID, sn.VolumeSize, errdefs.ErrInvalidArgument)
		}
		v.SnapshotID, v.Chain = sn.ID, sn.Chain
		chain = sn.Chain
	}
	if v.SizeGiB < 1 || v.SizeGiB > api.MaxVolumeGiB {
		return api.Volume{}, fmt.Errorf("size %d GiB: give 1 to %d (--size 10G): %w", v.SizeGiB, api.MaxVolumeGiB, errdefs.ErrInvalidArgument)
	}
	// The quota is checked, and the volume reserved, before any file is made.
	reserved, err := s.Admit(owner, 1, v.SizeGiB)
	if err != nil {
		return api.Volume{}, err
	}
	defer reserved()
	if err := os.MkdirAll(s.layout.VolumeDir(v), 0o700); err != nil {
		return api.Volume{}, err
	}
	if len(chain) > 0 {
		err = s.tool.CreateOverlay(ctx, s.layout.VolumePath(v), s.store.BlobPath(chain[len(chain)-1]), v.SizeGiB<<30)
	} else {
		err = s.tool.CreateBlank(ctx, s.layout.VolumePath(v), v.SizeGiB<<30)
	}
	if err != nil {
		return api.Volume{}, err
	}
	if err := s.Put(v); err != nil {
		os.Remove(s.layout.VolumePath(v))
		return api.Volume{}, err
	}
	return View(v), nil
}

// MakeFor makes the volumes of a new instance of owner's: an overlay on the layers of
// each of the image's mappings (nothing is copied), and the blank ones asked for. A
// failure leaves the records of those made, which the caller deletes (DeleteOf).
func (s *Set) MakeFor(ctx context.Context, owner, instance string, im *images.Image, changes, blank []api.VolumeSpec) ([]record.Mapping, error) {
	// Layers must not go between looking them up and the volume record naming them.
	release := s.store.Hold()
	defer release()
	var mappings []record.Mapping
	add := func(v *record.Volume, create func(path string) error) error {
		v.ID, v.OwnerID, v.InstanceID, v.CreateTime = ids.NewID(record.VolumePrefix), owner, instance, time.Now().UTC()
		if err := s.Put(v); err != nil {
			return err
		}
		mappings = append(mappings, record.Mapping{DeviceName: v.DeviceName, VolumeID: v.ID, DeleteOnTermination: v.DeleteOnTermination})
		return create(s.layout.VolumePath(v))
	}
	for _, bdm := range im.BlockDeviceMappings {
		if bdm.EBS == nil {
			continue
		}
		chain := []digest.Digest{bdm.EBS.Layer}
		if sn, err := s.store.Snapshot(bdm.EBS.SnapshotID); err == nil {
			chain = sn.Chain
		}
		v := &record.Volume{DeviceName: bdm.DeviceName, SnapshotID: bdm.EBS.SnapshotID, Chain: chain, SizeGiB: bdm.EBS.VolumeSize,
			DeleteOnTermination: bdm.EBS.DeleteOnTermination}
		if i := slices.IndexFunc(changes, func(sp api.VolumeSpec) bool { return sp.DeviceName == bdm.DeviceName }); i >= 0 {
			v.SizeGiB = max(v.SizeGiB, changes[i].SizeGiB)
			if d := changes[i].DeleteOnTermination; d != nil {
				v.DeleteOnTermination = *d
			}
		}
		if err := add(v, func(path string) error {
			return s.tool.CreateOverlay(ctx, path, s.store.BlobPath(chain[len(chain)-1]), v.SizeGiB<<30)
		}); err != nil {
			return nil, err
		}
	}
	for _, spec := range blank {
		v := &record.Volume{DeviceName: spec.DeviceName, SizeGiB: spec.SizeGiB, DeleteOnTermination: spec.DeleteOnTermination == nil || *spec.DeleteOnTermination}
		if err := add(v, func(path string) error { return s.tool.CreateBlank(ctx, path, v.SizeGiB<<30) }); err != nil {
			return nil, err
		}
	}
	return mappings, nil
}

// DeleteOf deletes the volumes that came with an instance (all, or those deleted on
// termination); its standalone ones stay.
func (s *Set) DeleteOf(instance string, all bool) {
	for _, v := range s.Select(func(v *record.Volume) bool {
		return v.InstanceID == instance && !v.Standalone && (all || v.DeleteOnTermination)
	}) {
		if err := s.Delete(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Error("delete volume")
		}
	}
}

// Remove deletes a volume the caller may see, attached to no instance.
func (s *Set) Remove(ref string, visible func(owner string) bool) (string, error) {
	v, err := s.visible(ref, visible)
	if err != nil {
		return "", err
	}
	v, release, err := s.Claim(v.ID, NotAttached)
	if err != nil {
		return "", err
	}
	defer release()
	return v.ID, s.Delete(v)
}

// Claim marks a volume as being worked on, after ready accepts its current record, and
// returns a copy of that record: of two requests on one volume at once (two attaches,
// an attach and a delete) the second is refused with VolumeInUse instead of acting on a
// record the first is changing. release ends the claim; it may be called more than once.
func (s *Set) Claim(id string, ready func(*record.Volume) error) (*record.Volume, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.all[id]
	switch {
	case cur == nil:
		return nil, nil, ids.NotFound("volume", id, nil)
	case s.busy[id]:
		return nil, nil, fmt.Errorf("volume %s is being attached, detached or deleted by another request; try again when it is done: %w", id, errdefs.ErrConflict)
	}
	if err := ready(cur); err != nil {
		return nil, nil, err
	}
	s.busy[id] = true
	var once sync.Once
	return clone(cur), func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.busy, id)
			s.mu.Unlock()
		})
	}, nil
}

// NotAttached accepts a volume attached to no instance (for Claim).
func NotAttached(v *record.Volume) error {
	if v.InstanceID != "" {
		return fmt.Errorf("volume %s is attached to %s as %s; detach it first: %w", v.ID, v.InstanceID, v.DeviceName, errdefs.ErrConflict)
	}
	return nil
}

// Admit reserves n volumes of gib GiB in all for owner, or refuses them when they would
// take the owner past a volume quota. Volumes in the records and those reserved count.
// The reservation holds until release, which the caller calls once the volumes' records
// are in the set (or their making failed); release may be called more than once.
func (s *Set) Admit(owner string, n, gib int64) (release func(), err error) {
	q := s.quota(owner)
	s.mu.Lock()
	defer s.mu.Unlock()
	useN, useGiB := s.reservedN[owner], s.reservedGiB[owner]
	for _, v := range s.all {
		if v.OwnerID == owner {
			useN++
			useGiB += v.SizeGiB
		}
	}
	switch {
	case useN+n > int64(q.Volumes):
		return nil, quota.Exceeded(owner, "volumes", q.Volumes, int(useN), int(n))
	case useGiB+gib > int64(q.VolumeGiB):
		return nil, quota.Exceeded(owner, "volume size (GiB)", q.VolumeGiB, int(useGiB), int(gib))
	}
	releaseN, releaseGiB := s.reservedN.Reserve(&s.mu, owner, n), s.reservedGiB.Reserve(&s.mu, owner, gib)
	return func() { releaseN(); releaseGiB() }, nil
}
