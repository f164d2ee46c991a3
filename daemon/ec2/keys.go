package ec2

import (
	"cmp"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/peer"
	"kiln/daemon/record"
)

// MaxAccessKeys is how many access keys a user may have at once (the cloud's two: one to
// use, one to rotate to).
const MaxAccessKeys = 2

// Keys are the access keys that sign requests to the door, each a Unix user's.
type Keys struct {
	db   *record.DB
	mu   sync.Mutex
	byID map[string]record.AccessKey
}

// NewKeys loads the access keys from db.
func NewKeys(db *record.DB) (*Keys, error) {
	all, err := db.AccessKeys()
	if err != nil {
		return nil, err
	}
	k := &Keys{db: db, byID: map[string]record.AccessKey{}}
	for _, ak := range all {
		k.byID[ak.ID] = ak
	}
	return k, nil
}

// Create makes an access key for the caller; the answer is the only place its secret
// is ever shown.
func (k *Keys) Create(c peer.Caller, now time.Time) (api.AccessKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, ak := range k.byID {
		if ak.UID == c.UID {
			n++
		}
	}
	if n >= MaxAccessKeys {
		return api.AccessKey{}, fmt.Errorf("%s has %d access keys, the most a user may have: remove one first (kiln access-key rm): %w",
			c.User, n, errdefs.ErrResourceExhausted)
	}
	id := make([]byte, 10)
	secret := make([]byte, 30)
	rand.Read(id)
	rand.Read(secret)
	ak := record.AccessKey{
		ID:         "AKIA" + base32.StdEncoding.EncodeToString(id)[:16],
		Secret:     base64.StdEncoding.EncodeToString(secret),
		OwnerID:    c.User,
		UID:        c.UID,
		CreateTime: now.UTC().Truncate(time.Second),
	}
	if err := k.db.PutAccessKey(ak); err != nil {
		return api.AccessKey{}, err
	}
	k.byID[ak.ID] = ak
	out := view(ak)
	out.SecretAccessKey = ak.Secret
	return out, nil
}

// List is the access keys of the users visible says, without their secrets.
func (k *Keys) List(visible func(uid uint32) bool) []api.AccessKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []api.AccessKey
	for _, ak := range k.byID {
		if visible(ak.UID) {
			out = append(out, view(ak))
		}
	}
	slices.SortFunc(out, func(a, b api.AccessKey) int {
		return cmp.Or(strings.Compare(a.OwnerID, b.OwnerID), a.CreateTime.Compare(b.CreateTime))
	})
	return out
}

// Delete removes an access key of a user visible says; requests signed with it fail
// from then on.
func (k *Keys) Delete(id string, visible func(uid uint32) bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	ak, ok := k.byID[id]
	if !ok || !visible(ak.UID) {
		return fmt.Errorf("access key %q: no such access key of yours (kiln access-key ls): %w", clip(id), errdefs.ErrNotFound)
	}
	if err := k.db.DeleteAccessKey(id); err != nil {
		return err
	}
	delete(k.byID, id)
	return nil
}

func (k *Keys) lookup(id string) (record.AccessKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ak, ok := k.byID[id]
	return ak, ok
}

func view(ak record.AccessKey) api.AccessKey {
	return api.AccessKey{AccessKeyID: ak.ID, OwnerID: ak.OwnerID, CreateTime: ak.CreateTime}
}
