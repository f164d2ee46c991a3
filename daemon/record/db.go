package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"kiln/daemon/api"
	"kiln/daemon/events"
)

// The daemon's buckets in the metadata DB (the images store has its own there, the
// event log its own).
var (
	bucketInstances = []byte("instances")
	bucketVolumes   = []byte("volumes")
	bucketKeyPairs  = []byte("keypairs")
)

// DB keeps the records of instances and volumes in their buckets of the metadata DB,
// and appends to the event log each change of an instance's state and each volume
// made, attached, detached or deleted, in the transaction that writes it. It caches
// nothing: the instance domain keeps what it reads.
type DB struct {
	db     *bolt.DB
	events *events.Log
}

// Open makes the buckets, when missing, in db; the events go to log (in the same db).
func Open(db *bolt.DB, log *events.Log) (*DB, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketVolumes, bucketKeyPairs, bucketAccessKeys, bucketClientTokens} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metadata db: %w", err)
	}
	return &DB{db, log}, nil
}

// Load reads every instance and volume record.
func (d *DB) Load() (insts []Instance, vols []Volume, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketVolumes).ForEach(func(k, v []byte) error {
			var vr Volume
			if err := json.Unmarshal(v, &vr); err != nil {
				return fmt.Errorf("volume record %s: %w", k, err)
			}
			vols = append(vols, vr)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
			var rec Instance
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("instance record %s: %w", k, err)
			}
			insts = append(insts, rec)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("metadata db: %w", err)
	}
	return insts, vols, nil
}

// PutInstance writes an instance's record, and an event when its state is not from's.
func (d *DB) PutInstance(rec Instance, from string) error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		if err := put(tx, bucketInstances, rec.ID, rec); err != nil {
			return err
		}
		if rec.State == from {
			return nil
		}
		return d.events.Append(tx, events.Instance(rec.ID, rec.OwnerID, rec.State))
	})
	if err != nil {
		return fmt.Errorf("instance %s: %w", rec.ID, err)
	}
	return nil
}

// DeleteInstance removes an instance's record.
func (d *DB) DeleteInstance(id string) error {
	return d.delete(bucketInstances, "instance", id)
}

// PutVolume writes a volume's record, with the events of what changed: made, attached
// (to another instance), detached.
func (d *DB) PutVolume(v *Volume) error {
	if err := d.db.Update(func(tx *bolt.Tx) error {
		old, err := volumeIn(tx, v.ID)
		if err != nil {
			return err
		}
		if err := put(tx, bucketVolumes, v.ID, v); err != nil {
			return err
		}
		var evs []api.Event
		if old == nil {
			old = &Volume{}
			evs = append(evs, events.Volume(v.ID, v.OwnerID, events.VolumeCreated, "", ""))
		}
		if old.InstanceID != v.InstanceID && old.InstanceID != "" {
			evs = append(evs, events.Volume(v.ID, v.OwnerID, events.VolumeDetached, old.InstanceID, old.DeviceName))
		}
		if old.InstanceID != v.InstanceID && v.InstanceID != "" {
			evs = append(evs, events.Volume(v.ID, v.OwnerID, events.VolumeAttached, v.InstanceID, v.DeviceName))
		}
		for _, ev := range evs {
			if err := d.events.Append(tx, ev); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	return nil
}

// volumeIn is the volume's record in tx, or nil.
func volumeIn(tx *bolt.Tx, id string) (*Volume, error) {
	b := tx.Bucket(bucketVolumes).Get([]byte(id))
	if b == nil {
		return nil, nil
	}
	var v Volume
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("volume record %s: %w", id, err)
	}
	return &v, nil
}

// DeleteVolume removes a volume's record, with its event.
func (d *DB) DeleteVolume(id string) error {
	if err := d.db.Update(func(tx *bolt.Tx) error {
		old, err := volumeIn(tx, id)
		if err != nil || old == nil {
			return err
		}
		if err := tx.Bucket(bucketVolumes).Delete([]byte(id)); err != nil {
			return err
		}
		return d.events.Append(tx, events.Volume(id, old.OwnerID, events.VolumeDeleted, "", ""))
	}); err != nil {
		return fmt.Errorf("volume %s: %w", id, err)
	}
	return nil
}

func (d *DB) delete(bucket []byte, what, id string) error {
	if err := d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(id)) }); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	return nil
}

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

// Layout says where instances' and volumes' files live under the data root
// (docs/layout.md).
type Layout struct{ Root string }

// Dir is an instance's directory.
func (l Layout) Dir(id string) string { return filepath.Join(l.Root, "instances", id) }

// VolumePath is a volume's top file.
func (l Layout) VolumePath(v *Volume) string {
	return filepath.Join(l.VolumeDir(v), v.ID+".qcow2")
}

// VolumeDir is where a volume's files live: its instance's directory, or, for a volume
// made on its own, <root>/volumes (attached or not).
func (l Layout) VolumeDir(v *Volume) string {
	if v.Standalone {
		return filepath.Join(l.Root, "volumes")
	}
	return l.Dir(v.InstanceID)
}

// Pending are the volume's files that are not in the store yet: frozen ones not
// captured, then the top.
func (l Layout) Pending(v *Volume) []string {
	var files []string
	for _, f := range v.Frozen {
		if f.Layer == "" {
			files = append(files, filepath.Join(l.VolumeDir(v), f.Name))
		}
	}
	return append(files, l.VolumePath(v))
}

// File is the metadata DB under the data root.
const File = "meta.db"

// OpenFile opens (creating it, and root, when missing) the metadata DB under root: the
// image store keeps its buckets there, the daemon its own (Open). It fails with an error
// wrapping errdefs.ErrUnavailable when another process has it open.
func OpenFile(root string) (*bolt.DB, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(root, File)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("store %s is in use by another process (%s is locked); stop the other kilnd or use another --root: %w",
			root, path, errdefs.ErrUnavailable)
	case err != nil:
		return nil, fmt.Errorf("metadata db %s: %w", path, err)
	}
	return db, nil
}

// KeyPair is an SSH key pair's record: its public key and fingerprint, never a private
// key.
type KeyPair struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	OwnerID     string    `json:"ownerId"`
	Type        string    `json:"type"`
	Fingerprint string    `json:"fingerprint"`
	PublicKey   string    `json:"publicKey"`
	CreateTime  time.Time `json:"createTime"`

	// Tags are the key pair's tags.
	Tags map[string]string `json:"tags,omitempty"`
}

// KeyPairs reads every key pair's record.
func (d *DB) KeyPairs() ([]KeyPair, error) {
	var out []KeyPair
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeyPairs).ForEach(func(k, v []byte) error {
			var kp KeyPair
			if err := json.Unmarshal(v, &kp); err != nil {
				return fmt.Errorf("key pair record %s: %w", k, err)
			}
			out = append(out, kp)
			return nil
		})
	})
	return out, err
}

// PutKeyPair writes a key pair's record.
func (d *DB) PutKeyPair(kp KeyPair) error {
	if err := d.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketKeyPairs, kp.ID, kp) }); err != nil {
		return fmt.Errorf("key pair %s: %w", kp.ID, err)
	}
	return nil
}

// DeleteKeyPair removes a key pair's record.
func (d *DB) DeleteKeyPair(id string) error {
	return d.delete(bucketKeyPairs, "key pair", id)
}
