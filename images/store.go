package images

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	_ "crypto/sha256" // registers sha256 for go-digest

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"

	"kiln/internal/ids"
)

var (
	bucketImages    = []byte("images")
	bucketSnapshots = []byte("snapshots")
)

// Store is kiln's image store: content plus records. It is safe for concurrent use.
// Records are cached in memory (the daemon is the DB's only user), so reads never touch
// the disk; every change is written to the DB before the cache.
type Store struct {
	root    string
	content content.Store
	db      *bolt.DB

	mu        sync.RWMutex
	images    map[string]*Image
	snapshots map[string]*Snapshot

	// gcLock is held shared by everything that writes blobs no record reaches yet
	// (an ingest, a register), and exclusively by GC.
	gcLock sync.RWMutex

	watch Watcher
}

// Watcher is told of the changes of records that matter to others (the daemon's event
// log), inside the transaction that writes each: an error it returns undoes the change.
// Its functions must not call the store. A nil function is not called.
type Watcher struct {
	// ImageState: an image entered state to from state from ("" for a new image). A
	// deregistered image enters StateDeregistered.
	ImageState func(tx *bolt.Tx, im *Image, from, to State) error
	// Snapshot: a snapshot record was made (created) or deleted.
	Snapshot func(tx *bolt.Tx, sn *Snapshot, created bool) error
}

// StateDeregistered is the state a deregistered image enters as its record goes: the
// Watcher's word for it (no record has it).
const StateDeregistered State = "deregistered"

// Option is an option of Open.
type Option func(*Store)

// WithWatcher has the store tell w of every change of an image's state, and of every
// snapshot made or deleted, from Open on.
func WithWatcher(w Watcher) Option { return func(s *Store) { s.watch = w } }

// imageState tells the watcher, in tx, that im entered to from from.
func (s *Store) imageState(tx *bolt.Tx, im *Image, from, to State) error {
	if s.watch.ImageState == nil || from == to {
		return nil
	}
	return s.watch.ImageState(tx, im, from, to)
}

// snapshotChange tells the watcher, in tx, that sn was made or deleted.
func (s *Store) snapshotChange(tx *bolt.Tx, sn *Snapshot, created bool) error {
	if s.watch.Snapshot == nil {
		return nil
	}
	return s.watch.Snapshot(tx, sn, created)
}

// Open opens (creating if needed) the store under root, its records in their buckets
// of db (the metadata DB, which the caller opened and closes after the store's last
// use). Images left pending by a daemon that stopped while making them are marked
// failed.
func Open(ctx context.Context, root string, db *bolt.DB, opts ...Option) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(root, 0o700); err != nil { // the store is its daemon's alone
		return nil, err
	}
	// The blobs directory exists from the start, so a walk of an empty store works.
	if err := os.MkdirAll(filepath.Join(root, "content", "blobs", "sha256"), 0o700); err != nil {
		return nil, err
	}
	cs, err := local.NewStore(filepath.Join(root, "content"))
	if err != nil {
		return nil, fmt.Errorf("content store %s: %w", root, err)
	}
	s := &Store{root: root, content: cs, db: db, images: map[string]*Image{}, snapshots: map[string]*Snapshot{}}
	for _, o := range opts {
		o(s)
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Root is the directory the store lives in.
func (s *Store) Root() string { return s.root }

// load reads every record into the cache and fails images a stopped daemon left
// pending, dropping the snapshots made for them: a failed image holds no content.
func (s *Store) load(ctx context.Context) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketImages, bucketSnapshots} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		interrupted := map[string]*Image{}
		if err := tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
			var im Image
			if err := json.Unmarshal(v, &im); err != nil {
				return fmt.Errorf("image record %s: %w", k, err)
			}
			if im.State == StatePending {
				im.State, im.StateReason = StateFailed, "kilnd stopped while the image was being made; deregister it and try again"
				im.BlockDeviceMappings = nil
				interrupted[im.ID] = &im
			}
			s.images[im.ID] = &im
			return nil
		}); err != nil {
			return err
		}
		for id, im := range interrupted {
			log.G(ctx).WithField("image", id).Warn("image was pending when kilnd stopped; marked failed")
			if err := putJSON(tx, bucketImages, id, im); err != nil {
				return err
			}
			if err := s.imageState(tx, im, StatePending, StateFailed); err != nil {
				return err
			}
		}
		var dropped []*Snapshot
		if err := tx.Bucket(bucketSnapshots).ForEach(func(k, v []byte) error {
			var sn Snapshot
			if err := json.Unmarshal(v, &sn); err != nil {
				return fmt.Errorf("snapshot record %s: %w", k, err)
			}
			if _, ok := interrupted[sn.ImageID]; ok {
				dropped = append(dropped, &sn)
				return nil
			}
			s.snapshots[sn.ID] = &sn
			return nil
		}); err != nil {
			return err
		}
		for _, sn := range dropped {
			if err := tx.Bucket(bucketSnapshots).Delete([]byte(sn.ID)); err != nil {
				return err
			}
			if err := s.snapshotChange(tx, sn, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metadata db %s: %w", s.root, err)
	}
	return nil
}

func putJSON(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

// CreateImage stores a new image record. Names are unique per owner: a name the owner
// already uses gives an error wrapping errdefs.ErrAlreadyExists.
func (s *Store) CreateImage(im *Image) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.nameFree(im.OwnerID, im.Name); err != nil {
		return err
	}
	if _, ok := s.images[im.ID]; ok {
		return fmt.Errorf("image %s: %w", im.ID, errdefs.ErrAlreadyExists)
	}
	return s.putImage(im.clone())
}

// CheckNameFree says whether owner may name a new image name now (CreateImage checks
// again): nil, or an error wrapping errdefs.ErrAlreadyExists naming the image that has it.
func (s *Store) CheckNameFree(owner, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nameFree(owner, name)
}

func (s *Store) nameFree(owner, name string) error {
	if other := s.byName(owner, name); other != nil {
		return fmt.Errorf("image name %q is already used by %s (%s); choose another name or deregister it: %w",
			name, other.ID, other.State, errdefs.ErrAlreadyExists)
	}
	return nil
}

// putImage writes im to the DB (telling the watcher when its state changed), then to
// the cache. The caller holds s.mu.
func (s *Store) putImage(im *Image) error {
	var from State
	if cur, ok := s.images[im.ID]; ok {
		from = cur.State
	}
	var binned, restored bool
	if cur, ok := s.images[im.ID]; ok {
		binned, restored = cur.Bin == nil && im.Bin != nil, cur.Bin != nil && im.Bin == nil
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx, bucketImages, im.ID, im); err != nil {
			return err
		}
		switch { // into the recycle bin it is deregistered to all; out of it, back as it was
		case binned:
			return s.imageState(tx, im, im.State, StateDeregistered)
		case restored:
			return s.imageState(tx, im, StateDeregistered, im.State)
		}
		return s.imageState(tx, im, from, im.State)
	}); err != nil {
		return fmt.Errorf("image %s: %w", im.ID, err)
	}
	s.images[im.ID] = im
	return nil
}

// byName finds the owner's image with that name (an image in the recycle bin holds no
// name). The caller holds s.mu.
func (s *Store) byName(owner, name string) *Image {
	for _, im := range s.images {
		if im.OwnerID == owner && im.Name == name && im.Bin == nil {
			return im
		}
	}
	return nil
}

// UpdateImage applies fn to a copy of the image's record and stores the result; if fn
// fails nothing changes. An unknown id gives errdefs.ErrNotFound. fn runs with the store
// locked: it must not call the store.
func (s *Store) UpdateImage(id string, fn func(*Image) error) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.images[id]
	if !ok {
		return nil, fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
	}
	im := cur.clone()
	if err := fn(im); err != nil {
		return nil, err
	}
	im.ID = id
	if err := s.putImage(im); err != nil {
		return nil, err
	}
	return im.clone(), nil
}

// Image returns a copy of the image's record, or errdefs.ErrNotFound.
func (s *Store) Image(id string) (*Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	im, ok := s.images[id]
	if !ok {
		return nil, fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
	}
	return im.clone(), nil
}

// Images returns copies of the records keep accepts, oldest first.
func (s *Store) Images(keep func(*Image) bool) []*Image {
	s.mu.RLock()
	var out []*Image
	for _, im := range s.images {
		if keep(im) {
			out = append(out, im.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Image) int {
		return cmp.Or(a.CreationDate.Compare(b.CreationDate), strings.Compare(a.ID, b.ID))
	})
	return out
}

// DeleteImage removes the image's record together with the snapshot records made for
// images that no remaining image uses (a copy shares its original's snapshots, so they
// go with the last image that names them), in one transaction. Content goes at the next
// GC, if nothing else reaches it. An unknown id gives errdefs.ErrNotFound.
func (s *Store) DeleteImage(id string) (*Image, error) { return s.DeleteImageIf(id, nil) }

// DeleteImageIf is DeleteImage if check (nil: none) passes on the image's record as it
// is then, under the store's lock; else check's error comes back and nothing changes.
func (s *Store) DeleteImageIf(id string, check func(*Image) error) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[id]
	if !ok {
		return nil, fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
	}
	if check != nil {
		if err := check(im.clone()); err != nil {
			return nil, err
		}
	}
	used := map[string]bool{}
	for oid, other := range s.images {
		if oid == id {
			continue
		}
		for _, m := range other.BlockDeviceMappings {
			if m.EBS != nil {
				used[m.EBS.SnapshotID] = true
			}
		}
	}
	mine := map[string]bool{}
	for _, m := range im.BlockDeviceMappings {
		if m.EBS != nil {
			mine[m.EBS.SnapshotID] = true
		}
	}
	var owned []string
	for sid, sn := range s.snapshots {
		if (sn.ImageID == id || mine[sid] && sn.ImageID != "") && !used[sid] {
			owned = append(owned, sid)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, sid := range owned {
			if err := tx.Bucket(bucketSnapshots).Delete([]byte(sid)); err != nil {
				return err
			}
			if err := s.snapshotChange(tx, s.snapshots[sid], false); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketImages).Delete([]byte(id)); err != nil {
			return err
		}
		if im.Bin != nil { // its deregistration was told when it went into the bin
			return nil
		}
		return s.imageState(tx, im, im.State, StateDeregistered)
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	for _, sid := range owned {
		delete(s.snapshots, sid)
	}
	delete(s.images, id)
	return im, nil
}

// CopyImage stores a new image record over the same content as src (its manifest,
// config and snapshots: no bytes copied) with a new id and name, owned by owner. Tags
// come along only when tags is true; launch permissions never do.
func (s *Store) CopyImage(srcID, name, owner, description string, tags bool, now time.Time) (*Image, error) {
	src, err := s.Image(srcID)
	if err != nil {
		return nil, err
	}
	if src.State != StateAvailable {
		return nil, fmt.Errorf("image %s is %s; only an available image can be copied: %w", src.ID, src.State, errdefs.ErrFailedPrecondition)
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	cp := src.clone()
	cp.ID, cp.Name, cp.OwnerID, cp.CreationDate, cp.CopiedFromID = ids.NewID(ImagePrefix), name, owner, now, src.ID
	cp.Public = false
	cp.LaunchPermission = LaunchPermission{} // a copy is its owner's alone, as in the cloud
	if description != "" {
		cp.Description = description
	}
	if !tags {
		cp.Tags = nil
	}
	if err := s.CreateImage(cp); err != nil {
		return nil, err
	}
	return cp.clone(), nil
}

// PutSnapshot stores a snapshot record (new or changed).
func (s *Store) PutSnapshot(sn *Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putSnapshot(sn.clone())
}

// Snapshot returns a copy of the snapshot's record, or errdefs.ErrNotFound.
func (s *Store) Snapshot(id string) (*Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn, ok := s.snapshots[id]
	if !ok || sn.Bin != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	return sn.clone(), nil
}

// Snapshots returns copies of the snapshot records (those in the recycle bin left out:
// BinSnapshots), ordered by id.
func (s *Store) Snapshots() []*Snapshot {
	return s.snapshotsWhere(func(sn *Snapshot) bool { return sn.Bin == nil })
}

func (s *Store) snapshotsWhere(keep func(*Snapshot) bool) []*Snapshot {
	s.mu.RLock()
	out := make([]*Snapshot, 0, len(s.snapshots))
	for _, sn := range s.snapshots {
		if keep(sn) {
			out = append(out, sn.clone())
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Counts returns how many image and snapshot records there are.
func (s *Store) Counts() (images, snapshots int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.images), len(s.snapshots)
}

// unused refuses (errdefs.ErrFailedPrecondition) a snapshot an image's block device
// mapping names, an image in the recycle bin too. The caller holds s.mu.
func (s *Store) unused(id string) error {
	for _, im := range s.images {
		for _, m := range im.BlockDeviceMappings {
			if m.EBS == nil || m.EBS.SnapshotID != id {
				continue
			}
			if im.Bin != nil {
				return fmt.Errorf("snapshot %s is used by image %s (%s), which is in the recycle bin until %s: %w",
					id, im.ID, im.Name, im.Bin.Exit.UTC().Format(time.RFC3339), errdefs.ErrFailedPrecondition)
			}
			return fmt.Errorf("snapshot %s is used by image %s (%s); deregister the image first: %w", id, im.ID, im.Name, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// DeleteSnapshot removes a snapshot record; its layers go at the next GC if nothing
// else reaches them. An unknown id gives errdefs.ErrNotFound; a snapshot an image's
// block device mapping names gives errdefs.ErrFailedPrecondition, naming the image.
func (s *Store) DeleteSnapshot(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.snapshots[id]
	if !ok || sn.Bin != nil {
		return fmt.Errorf("snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	if err := s.unused(id); err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSnapshots).Delete([]byte(id)); err != nil {
			return err
		}
		return s.snapshotChange(tx, sn, false)
	}); err != nil {
		return fmt.Errorf("snapshot %s: %w", id, err)
	}
	delete(s.snapshots, id)
	return nil
}
