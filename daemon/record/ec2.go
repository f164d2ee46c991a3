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
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccessKeys).ForEach(func(k, v []byte) error {
			var ak AccessKey
			if err := json.Unmarshal(v, &ak); err != nil {
				return fmt.Errorf("access key record %s: %w", k, err)
			}
			out = append(out, ak)
			return nil
		})
	})
	return out, err
}

// PutAccessKey writes an access key's record.
func (d *DB) PutAccessKey(ak AccessKey) error {
	if err := d.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketAccessKeys, ak.ID, ak) }); err != nil {
		return fmt.Errorf("access key %s: %w", ak.ID, err)
	}
	return nil
}

// DeleteAccessKey removes an access key's record.
func (d *DB) DeleteAccessKey(id string) error {
	return d.delete(bucketAccessKeys, "access key", id)
}

// ClientToken reads the record of a client token; ok is false when there is none.
func (d *DB) ClientToken(key string) (ct ClientToken, ok bool, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketClientTokens).Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &ct)
	})
	return ct, ok, err
}

// PutClientToken writes a client token's record and, in the same transaction, removes
// those older than before (none when before is zero).
func (d *DB) PutClientToken(ct ClientToken, before time.Time) error {
	err := d.db.Update(func(tx *bolt.Tx) error {
		if err := put(tx, bucketClientTokens, ct.Key, ct); err != nil {
			return err
		}
		if before.IsZero() {
			return nil
		}
		b := tx.Bucket(bucketClientTokens)
		var old [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var c ClientToken
			if json.Unmarshal(v, &c) != nil || c.Time.Before(before) {
				old = append(old, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client token: %w", err)
	}
	return nil
}
