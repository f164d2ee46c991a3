package record

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The EC2 door's buckets: access keys, and the client tokens of idempotent requests.
var (
	bucketAccessKeys   = []byte("accesskeys")
	bucketClientTokens = []byte("clienttokens")
)

// AccessKey is an access key of a Unix user's, for requests signed with Signature
// Version 4 (the EC2 door). The secret is kept as the cloud keeps it: HMAC needs it.
type AccessKey struct {
	ID         string    `json:"id"`
	Secret     string    `json:"secret"`
	OwnerID    string    `json:"ownerId"` // the user's name when made
	UID        uint32    `json:"uid"`     // who the key acts as
	CreateTime time.Time `json:"createTime"`
}

// ClientToken is the outcome of an idempotent request (RunInstances, CreateImage,
// CopyImage with a ClientToken): a retry with the same token and parameters answers
// the same resources.
type ClientToken struct {
	Key    string    `json:"key"`    // owner, action and token
	Params string    `json:"params"` // a digest of the request's other parameters
	IDs    []string  `json:"ids"`    // what the request made
	Time   time.Time `json:"time"`
}

// AccessKeys reads every access key's record.
func (d *DB) AccessKeys() ([]AccessKey, error) {
	var out []AccessKey
	err := d.each(bucketAccessKeys, func(k, v []byte) error {
		var ak AccessKey
		if err := json.Unmarshal(v, &ak); err != nil {
			return fmt.Errorf("access key record %s: %w", k, err)
		}
		out = append(out, ak)
		return nil
	})
	return out, err
}

// PutAccessKey writes an access key's record.
func (d *DB) PutAccessKey(ak AccessKey) error {
	return d.putIn(bucketAccessKeys, "access key", ak.ID, ak)
}

// DeleteAccessKey removes an access key's record.
func (d *DB) DeleteAccessKey(id string) error {
	return d.deleteIn(bucketAccessKeys, "access key", id)
}

// ClientToken reads the record of a client token; ok is false when there is none.
func (d *DB) ClientToken(key string) (ct ClientToken, ok bool, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClientTokens)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &ct)
	})
	return ct, ok, err
}

// PutClientToken writes a client token's record and removes those older than before.
func (d *DB) PutClientToken(ct ClientToken, before time.Time) error {
	if err := d.putIn(bucketClientTokens, "client token", ct.Key, ct); err != nil {
		return err
	}
	var old [][]byte
	if err := d.each(bucketClientTokens, func(k, v []byte) error {
		var c ClientToken
		if json.Unmarshal(v, &c) != nil || c.Time.Before(before) {
			old = append(old, k)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range old {
		if err := d.deleteIn(bucketClientTokens, "client token", string(k)); err != nil {
			return err
		}
	}
	return nil
}

// each calls f for each entry of a bucket made on first write (none yet: no entries).
func (d *DB) each(bucket []byte, f func(k, v []byte) error) error {
	return d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		return b.ForEach(f)
	})
}

// putIn writes v under key in a bucket, making the bucket when missing.
func (d *DB) putIn(bucket []byte, what, key string, v any) error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucket); err != nil {
			return err
		}
		return put(tx, bucket, key, v)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, key, err)
	}
	return nil
}

// deleteIn removes key from a bucket that may not exist yet.
func (d *DB) deleteIn(bucket []byte, what, key string) error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, key, err)
	}
	return nil
}
