package recyclebin

import (
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestRetention: the owner's rules of the type that match (all, or by a tag, a key
// alone matching any value) decide; the longest wins; other owners' never count.
func TestRetention(t *testing.T) {
	rs, err := Open(kilntest.MetaDB(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []struct {
		owner string
		req   api.CreateRuleRequest
	}{
		{"alice", api.CreateRuleRequest{ResourceType: "image", RetentionDays: 3, ResourceTags: []api.ResourceTag{{Key: "env", Value: "prod"}}}},
		{"alice", api.CreateRuleRequest{ResourceType: "image", RetentionDays: 9, ResourceTags: []api.ResourceTag{{Key: "keep"}}}},
		{"alice", api.CreateRuleRequest{ResourceType: "snapshot", RetentionDays: 30}},
		{"bob", api.CreateRuleRequest{ResourceType: "image", RetentionDays: 100}},
	} {
		if _, err := rs.Create(r.owner, r.req, now); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		owner, typ string
		tags       map[string]string
		days       int
	}{
		{"alice", "image", nil, 0},
		{"alice", "image", map[string]string{"env": "dev"}, 0},
		{"alice", "image", map[string]string{"env": "prod"}, 3},
		{"alice", "image", map[string]string{"env": "prod", "keep": ""}, 9},
		{"alice", "snapshot", nil, 30},
		{"bob", "image", nil, 100},
		{"carol", "image", map[string]string{"keep": "x"}, 0},
	} {
		d, ok := rs.Retention(c.owner, c.typ, c.tags)
		if ok != (c.days > 0) || d != time.Duration(c.days)*Day {
			t.Errorf("%s's %s tagged %v: %s, %v; want %d days", c.owner, c.typ, c.tags, d, ok, c.days)
		}
	}
}

// TestLock: a locked rule cannot be deleted until unlocked and its delay has passed;
// the rules survive a reopen.
func TestLock(t *testing.T) {
	db := kilntest.MetaDB(t, t.TempDir())
	rs, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := rs.Create("alice", api.CreateRuleRequest{ResourceType: "image", RetentionDays: 1, UnlockDelayDays: 3}, now); !errdefs.IsInvalidArgument(err) {
		t.Errorf("an unlock delay of 3 days: %v; want refused", err)
	}
	r, err := rs.Create("alice", api.CreateRuleRequest{ResourceType: "image", RetentionDays: 1, UnlockDelayDays: 7}, now)
	if err != nil || r.LockState != api.LockLocked {
		t.Fatalf("create: %+v, %v", r, err)
	}
	if _, err := rs.Delete(r.ID, "alice", all, now); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("delete a locked rule: %v", err)
	}
	if r, err = rs.Unlock(r.ID, "alice", all, now); err != nil || r.LockState != api.LockPendingUnlock || !r.LockEndTime.Equal(now.Add(7*Day)) {
		t.Fatalf("unlock: %+v, %v", r, err)
	}
	if rs, err = Open(db); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Delete(r.ID, "alice", all, now.Add(7*Day-time.Second)); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("delete before the delay passed: %v", err)
	}
	if got, err := rs.Get(r.ID, "alice", all, now.Add(7*Day)); err != nil || got.LockState != api.LockUnlocked {
		t.Errorf("after the delay: %+v, %v", got, err)
	}
	if _, err := rs.Delete(r.ID, "alice", all, now.Add(7*Day)); err != nil {
		t.Errorf("delete after the delay: %v", err)
	}
}
