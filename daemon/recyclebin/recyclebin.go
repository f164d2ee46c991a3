package recyclebin

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"kiln/daemon/api"
	"kiln/images"
	"kiln/internal/ids"
)

// Prefix is a rule id's.
const Prefix = "rule-"

// Bounds of a rule's periods, in days (EC2's).
const (
	MinRetentionDays   = 1
	MaxRetentionDays   = 365
	MinUnlockDelayDays = 7
	MaxUnlockDelayDays = 30
	// MaxResourceTags bounds the tags one rule matches.
	MaxResourceTags = 50
	// MaxRules bounds one owner's rules.
	MaxRules = 250
)

// Day is a retention day.
const Day = 24 * time.Hour

var bucket = []byte("recycle-bin-rules")

// rule is a rule's record.
type rule struct {
	ID              string            `json:"id"`
	OwnerID         string            `json:"ownerId"`
	Description     string            `json:"description,omitempty"`
	ResourceType    string            `json:"resourceType"`
	RetentionDays   int               `json:"retentionDays"`
	ResourceTags    []api.ResourceTag `json:"resourceTags,omitempty"`
	UnlockDelayDays int               `json:"unlockDelayDays,omitempty"`
	// UnlockAt is when a rule whose unlock was asked for becomes unlocked.
	UnlockAt   *time.Time `json:"unlockAt,omitempty"`
	CreateTime time.Time  `json:"createTime"`
}

func (r *rule) lockState(now time.Time) string {
	switch {
	case r.UnlockDelayDays == 0:
		return api.LockUnlocked
	case r.UnlockAt == nil:
		return api.LockLocked
	case now.Before(*r.UnlockAt):
		return api.LockPendingUnlock
	}
	return api.LockUnlocked
}

func (r *rule) view(now time.Time) api.Rule {
	out := api.Rule{ID: r.ID, OwnerID: r.OwnerID, Description: r.Description, ResourceType: r.ResourceType,
		RetentionDays: r.RetentionDays, ResourceTags: slices.Clone(r.ResourceTags), LockState: r.lockState(now),
		UnlockDelayDays: r.UnlockDelayDays, CreateTime: r.CreateTime}
	if out.ResourceTags == nil {
		out.ResourceTags = []api.ResourceTag{}
	}
	if out.LockState == api.LockPendingUnlock {
		out.LockEndTime = r.UnlockAt
	}
	return out
}

// matches reports whether the rule keeps a resource of its owner's with tags: every
// one when the rule names no tags, else one with at least one of them.
func (r *rule) matches(tags map[string]string) bool {
	if len(r.ResourceTags) == 0 {
		return true
	}
	for _, t := range r.ResourceTags {
		if v, ok := tags[t.Key]; ok && (t.Value == "" || v == t.Value) {
			return true
		}
	}
	return false
}

// Rules is every user's rules. It is safe for concurrent use.
type Rules struct {
	db  *bolt.DB
	mu  sync.Mutex
	all map[string]*rule
}

// Open loads the rules from their bucket of db (made when missing).
func Open(db *bolt.DB) (*Rules, error) {
	rs := &Rules{db: db, all: map[string]*rule{}}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var r rule
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("recycle bin rule %s: %w", k, err)
			}
			rs.all[r.ID] = &r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("recycle bin rules: %w", err)
	}
	return rs, nil
}

// Create makes a rule of owner's at now, checking the request.
func (rs *Rules) Create(owner string, req api.CreateRuleRequest, now time.Time) (api.Rule, error) {
	bad := func(format string, a ...any) (api.Rule, error) {
		return api.Rule{}, fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	switch {
	case req.ResourceType != api.BinResourceImage && req.ResourceType != api.BinResourceSnapshot:
		return bad("resource type %q: want %s or %s", ids.Clip(req.ResourceType), api.BinResourceImage, api.BinResourceSnapshot)
	case req.RetentionDays < MinRetentionDays || req.RetentionDays > MaxRetentionDays:
		return bad("retention %d days: give %d to %d days (--retention 7d)", req.RetentionDays, MinRetentionDays, MaxRetentionDays)
	case req.UnlockDelayDays != 0 && (req.UnlockDelayDays < MinUnlockDelayDays || req.UnlockDelayDays > MaxUnlockDelayDays):
		return bad("unlock delay %d days: give %d to %d days (--lock 7d)", req.UnlockDelayDays, MinUnlockDelayDays, MaxUnlockDelayDays)
	case req.UnlockDelayDays != 0 && len(req.ResourceTags) > 0:
		return bad("only a rule that matches all of your %ss (no --tag) can be locked, as in EC2", req.ResourceType)
	case len(req.ResourceTags) > MaxResourceTags:
		return bad("at most %d resource tags in a rule", MaxResourceTags)
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return api.Rule{}, err
	}
	for _, t := range req.ResourceTags {
		if err := images.CheckTags(map[string]string{t.Key: t.Value}, 0); err != nil {
			return api.Rule{}, err
		}
	}
	r := &rule{ID: ids.NewID(Prefix), OwnerID: owner, Description: req.Description, ResourceType: req.ResourceType,
		RetentionDays: req.RetentionDays, ResourceTags: slices.Clone(req.ResourceTags), UnlockDelayDays: req.UnlockDelayDays,
		CreateTime: now.UTC()}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	n := 0
	for _, o := range rs.all {
		if o.OwnerID == owner {
			n++
		}
	}
	if n >= MaxRules {
		return api.Rule{}, fmt.Errorf("%s has %d recycle bin rules, the most one user may have: %w", owner, n, errdefs.ErrResourceExhausted)
	}
	if err := rs.put(r); err != nil {
		return api.Rule{}, err
	}
	return r.view(now), nil
}

// put writes r to the DB, then to the map. The caller holds rs.mu.
func (rs *Rules) put(r *rule) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := rs.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(r.ID), b) }); err != nil {
		return fmt.Errorf("recycle bin rule %s: %w", r.ID, err)
	}
	rs.all[r.ID] = r
	return nil
}

// List is the rules of the owners sees accepts, oldest first.
func (rs *Rules) List(sees func(owner string) bool, now time.Time) []api.Rule {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := []api.Rule{}
	for _, r := range rs.sorted(sees) {
		out = append(out, r.view(now))
	}
	return out
}

// sorted is the rules of the owners sees accepts, oldest first. The caller holds rs.mu.
func (rs *Rules) sorted(sees func(owner string) bool) []*rule {
	var out []*rule
	for _, r := range rs.all {
		if sees(r.OwnerID) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreateTime.Equal(out[j].CreateTime) {
			return out[i].CreateTime.Before(out[j].CreateTime)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// find is the rule ref (an id or the start of one) names among those of the owners
// sees accepts: errdefs.ErrNotFound when none. The caller holds rs.mu.
func (rs *Rules) find(ref, me string, sees func(owner string) bool) (*rule, error) {
	return ids.Pick("recycle bin rule", Prefix, ref, me, rs.sorted(sees), func(r *rule) ids.Ref {
		return ids.Ref{ID: r.ID, Owner: r.OwnerID}
	})
}

// Get is the rule ref names, of an owner sees accepts.
func (rs *Rules) Get(ref, me string, sees func(owner string) bool, now time.Time) (api.Rule, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, err := rs.find(ref, me, sees)
	if err != nil {
		return api.Rule{}, err
	}
	return r.view(now), nil
}

// Delete deletes the rule ref names; a locked rule, or one whose unlock delay has not
// passed, is refused (errdefs.ErrFailedPrecondition). What the rule kept stays in the
// bin until its stay ends.
func (rs *Rules) Delete(ref, me string, sees func(owner string) bool, now time.Time) (string, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, err := rs.find(ref, me, sees)
	if err != nil {
		return "", err
	}
	switch r.lockState(now) {
	case api.LockLocked:
		return "", fmt.Errorf("recycle bin rule %s is locked; unlock it (kiln recycle-bin rule unlock %s) and delete it %d days later: %w",
			r.ID, r.ID, r.UnlockDelayDays, errdefs.ErrFailedPrecondition)
	case api.LockPendingUnlock:
		return "", fmt.Errorf("recycle bin rule %s is being unlocked; it can be deleted from %s: %w",
			r.ID, r.UnlockAt.UTC().Format(time.RFC3339), errdefs.ErrFailedPrecondition)
	}
	if err := rs.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(r.ID)) }); err != nil {
		return "", fmt.Errorf("recycle bin rule %s: %w", r.ID, err)
	}
	delete(rs.all, r.ID)
	return r.ID, nil
}

// Unlock starts the unlock delay of a locked rule at now: it is unlocked once the delay
// has passed. A rule that is not locked is refused (errdefs.ErrFailedPrecondition).
func (rs *Rules) Unlock(ref, me string, sees func(owner string) bool, now time.Time) (api.Rule, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, err := rs.find(ref, me, sees)
	if err != nil {
		return api.Rule{}, err
	}
	if st := r.lockState(now); st != api.LockLocked {
		return api.Rule{}, fmt.Errorf("recycle bin rule %s is %s, not locked: %w", r.ID, strings.ReplaceAll(st, "_", " "), errdefs.ErrFailedPrecondition)
	}
	c := *r
	at := now.UTC().Add(time.Duration(r.UnlockDelayDays) * Day)
	c.UnlockAt = &at
	if err := rs.put(&c); err != nil {
		return api.Rule{}, err
	}
	return c.view(now), nil
}

// Retention is how long owner's resource of type typ with tags stays in the bin once
// deleted: the longest retention of the owner's rules that match it, and false when
// none does.
func (rs *Rules) Retention(owner, typ string, tags map[string]string) (time.Duration, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	days := 0
	for _, r := range rs.all {
		if r.OwnerID == owner && r.ResourceType == typ && r.matches(tags) {
			days = max(days, r.RetentionDays)
		}
	}
	return time.Duration(days) * Day, days > 0
}
