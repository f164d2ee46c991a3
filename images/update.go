package images

import (
	"fmt"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// UpdateSnapshot applies fn to a copy of the snapshot's record and stores the result;
// if fn fails nothing changes. An unknown id gives errdefs.ErrNotFound. fn runs with
// the store locked: it must not call the store.
func (s *Store) UpdateSnapshot(id string, fn func(*Snapshot) error) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.snapshots[id]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", id, errdefs.ErrNotFound)
	}
	sn := cur.clone()
	if err := fn(sn); err != nil {
		return nil, err
	}
	sn.ID = id
	if err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx, bucketSnapshots, id, sn) }); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id, err)
	}
	s.snapshots[id] = sn
	return sn.clone(), nil
}
