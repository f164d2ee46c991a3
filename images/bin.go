package images

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// The recycle bin: an image deregistered (or a snapshot deleted) while a retention rule
// of its owner's matches it keeps its record, marked with its stay (Lifecycle.Bin,
// Snapshot.Bin), so its content stays a GC root; it is no image (no snapshot) to
// anyone meanwhile, only an entry of the bin, until it is restored (same id, same
// content) or its stay ends and PurgeBin deletes it.

// BinImage puts the image into the recycle bin for stay, if check (nil: none) passes on
// its record as it is then, under the store's lock (its error comes back). An unknown
// id, or one already in the bin, gives errdefs.ErrNotFound.
func (s *Store) BinImage(id string, stay BinStay, check func(*Image) error) (*Image, error) {
	return s.UpdateImage(id, func(im *Image) error {
		if im.Bin != nil {
			return fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
		}
		if check != nil {
			if err := check(im); err != nil {
				return err
			}
		}
		im.Bin = &stay
		return nil
	})
}

// RestoreImage takes the image out of the recycle bin at now, as it was when it went
// in (its launch permissions too). One that is not in the bin, or whose stay has ended,
// gives errdefs.ErrNotFound; one whose name its owner has given another image since,
// errdefs.ErrAlreadyExists.
func (s *Store) RestoreImage(id string, now time.Time) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.images[id]
	if !ok || cur.Bin == nil || !now.Before(cur.Bin.Exit) {
		return nil, fmt.Errorf("image %s is not in the recycle bin (kiln recycle-bin ls lists what is): %w", id, errdefs.ErrNotFound)
	}
	if other := s.byName(cur.OwnerID, cur.Name); other != nil {
		return nil, fmt.Errorf("image name %q is used by %s since %s was deregistered; rename or deregister %s first: %w",
			cur.Name, other.ID, id, other.ID, errdefs.ErrAlreadyExists)
	}
	im := cur.clone()
	im.Bin = nil
	if err := s.putImage(im); err != nil {
		return nil, err
	}
	return im.clone(), nil
}

// BinImages returns copies of the records of the images in the recycle bin whose stay
// has not ended at now, oldest first.
func (s *Store) BinImages(now time.Time) []*Image {
	return s.Images(func(im *Image) bool { return im.Bin != nil && now.Before(im.Bin.Exit) })
}

// BinSnapshot puts the snapshot into the recycle bin for stay: refused, as a delete
// is, while an image uses it. An unknown id gives errdefs.ErrNotFound.
func (s *Store) BinSnapshot(id string, stay BinStay) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.snapshots[id]
	if !ok || cur.Bin != nil {
		return fmt.Errorf("snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	if err := s.unused(id); err != nil {
		return err
	}
	sn := cur.clone()
	sn.Bin = &stay
	return s.putSnapshot(sn)
}

// RestoreSnapshot takes the snapshot out of the recycle bin at now. One that is not
// there, or whose stay has ended, gives errdefs.ErrNotFound.
func (s *Store) RestoreSnapshot(id string, now time.Time) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.snapshots[id]
	if !ok || cur.Bin == nil || !now.Before(cur.Bin.Exit) {
		return nil, fmt.Errorf("snapshot %s is not in the recycle bin (kiln recycle-bin ls lists what is): %w", id, errdefs.ErrNotFound)
	}
	sn := cur.clone()
	sn.Bin = nil
	if err := s.putSnapshot(sn); err != nil {
		return nil, err
	}
	return sn.clone(), nil
}

// BinSnapshots returns copies of the records of the snapshots in the recycle bin whose
// stay has not ended at now, ordered by id; with all, those whose stay has ended too.
func (s *Store) BinSnapshots(now time.Time, all bool) []*Snapshot {
	return s.snapshotsWhere(func(sn *Snapshot) bool { return sn.Bin != nil && (all || now.Before(sn.Bin.Exit)) })
}

// putSnapshot writes sn to the DB, then to the cache, and tells the watcher of a new
// snapshot; one going into the recycle bin is told as deleted, one restored as made.
// The caller holds s.mu.
func (s *Store) putSnapshot(sn *Snapshot) error {
	cur, existed := s.snapshots[sn.ID]
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx, bucketSnapshots, sn.ID, sn); err != nil {
			return err
		}
		switch {
		case !existed || cur.Bin != nil && sn.Bin == nil:
			return s.snapshotChange(tx, sn, true)
		case cur.Bin == nil && sn.Bin != nil:
			return s.snapshotChange(tx, sn, false)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID, err)
	}
	s.snapshots[sn.ID] = sn
	return nil
}

// PurgeBin deletes for good the images and snapshots whose stay in the recycle bin has
// ended at now (an image with the snapshots made for it that no other image uses, as
// DeleteImage does), and returns their ids. Their content goes at the GC that follows.
func (s *Store) PurgeBin(now time.Time) (imageIDs, snapshotIDs []string, err error) {
	for _, im := range s.Images(func(im *Image) bool { return im.Bin != nil && !now.Before(im.Bin.Exit) }) {
		// Checked again under the lock: a restore may have come first.
		_, err := s.DeleteImageIf(im.ID, func(cur *Image) error {
			if cur.Bin == nil || now.Before(cur.Bin.Exit) {
				return fmt.Errorf("image %s left the recycle bin: %w", im.ID, errdefs.ErrNotFound)
			}
			return nil
		})
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return imageIDs, snapshotIDs, err
		}
		imageIDs = append(imageIDs, im.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sn := range s.snapshots {
		if sn.Bin == nil || now.Before(sn.Bin.Exit) {
			continue
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSnapshots).Delete([]byte(id)) }); err != nil {
			return imageIDs, snapshotIDs, fmt.Errorf("snapshot %s: %w", id, err)
		}
		delete(s.snapshots, id)
		snapshotIDs = append(snapshotIDs, id)
	}
	return imageIDs, snapshotIDs, nil
}
