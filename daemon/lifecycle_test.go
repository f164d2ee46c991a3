package daemon_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"kiln/daemon"
	"kiln/daemon/api"
)

// testClock is a kilnd's test clock (daemon.TestClockEnv): an offset file the test
// moves forward.
type testClock struct {
	t      *testing.T
	path   string
	offset time.Duration
}

func newTestClock(t *testing.T, dir string) *testClock {
	c := &testClock{t: t, path: filepath.Join(dir, "clock")}
	c.advance(0)
	return c
}

// advance moves kilnd's clock d forward (the file is replaced whole).
func (c *testClock) advance(d time.Duration) {
	c.t.Helper()
	c.offset += d
	tmp := c.path + ".new"
	if err := os.WriteFile(tmp, []byte(c.offset.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		c.t.Fatal(err)
	}
}

// idsOf splits a command's -q output into ids.
func idsOf(s string) []string { return strings.Fields(s) }

// TestImageLifecycle is issue 17's items 2 to 5 against a real kilnd, each as its
// owner (alice), a user it is shared with (bob) and another user (dave) see it:
// deprecation, disabling, deregistration protection with and without its cooldown,
// and the recycle bin (restore within the retention, gone after it, its content kept
// from gc meanwhile), with kilnd's test clock moved forward. One guest is started (a
// deprecated image is launchable), none waited for.
func TestImageLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kilnd and a guest")
	}
	d := publicDir(t)
	k := kilndIn(t, d, "debug")
	users := accounts(t, k.Socket)
	alice, bob, dave := users["alice"], users["bob"], users["dave"]
	clock := newTestClock(t, d)
	k.Env = []string{daemon.TestClockEnv + "=" + clock.path}
	k.Start()
	t.Cleanup(k.KillQEMUs)
	if !strings.Contains(k.Log.String(), "test clock") {
		t.Errorf("kilnd does not warn that it runs with a test clock:\n%s", k.Log.String())
	}

	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "lc-image", "--wait", "-q"}, g.RegisterFlags()...)...)
	alice.ok("image", "share", img, "--user", "bob")
	pub := alice.ok("image", "copy", img, "lc-public", "-q")
	alice.ok("image", "share", pub, "--public")
	var mine api.Image
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &mine)
	if mine.DeregistrationProtection != "disabled" || mine.DeprecationTime != nil {
		t.Errorf("a new image: protection %q, deprecation %v; want disabled and none", mine.DeregistrationProtection, mine.DeprecationTime)
	}
	manifest := filepath.Join(k.Root, "content", "blobs", "sha256", strings.TrimPrefix(mine.ManifestDigest, "sha256:"))

	// list is what a user's image ls -q gives, with flags.
	list := func(a *account, flags ...string) []string {
		return idsOf(a.ok(append([]string{"image", "ls", "-q"}, flags...)...))
	}
	sees := func(who string, got []string, want ...string) {
		t.Helper()
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v; want %v", who, got, want)
		}
	}

	t.Run("deprecate", func(t *testing.T) {
		alice.refused(api.CodeInvalidParameterValue, "image", "deprecate", img, "--at", "2001-01-01")
		bob.refused(api.CodeUnauthorizedOperation, "image", "deprecate", img, "--at", "1h")
		dave.refused(api.CodeInvalidAMIIDNotFound, "image", "deprecate", img, "--at", "1h")
		for _, id := range []string{img, pub} {
			alice.ok("image", "deprecate", id, "--at", "1h")
		}
		// Not deprecated yet: listed as before, with the time shown.
		sees("bob before the time", list(bob), img, pub)
		sees("dave before the time", list(dave), pub)
		var his api.Image
		decodeJSON(t, bob.ok("image", "inspect", img, "-o", "json"), &his)
		if his.DeprecationTime == nil || his.DeprecationTime.Second() != 0 {
			t.Errorf("bob sees deprecation time %v; want one rounded to the minute", his.DeprecationTime)
		}
		clock.advance(2 * time.Hour)
		sees("alice (the owner)", list(alice), img, pub)
		sees("bob", list(bob))
		sees("bob --include-deprecated", list(bob, "--include-deprecated"), img, pub)
		sees("dave", list(dave))
		sees("dave --include-deprecated", list(dave, "--include-deprecated"), pub)
		if got := bob.ok("image", "inspect", img, "-q"); got != img {
			t.Errorf("bob's inspect of a deprecated image he may launch: %q", got)
		}
		// Still launchable: bob's instance starts (not waited for) and goes.
		inst := bob.ok("run", img, "--type", "nano", "-q")
		bob.ok("terminate", "--force", "--wait", inst)
		alice.ok("image", "deprecate", img, "--cancel")
		sees("bob after alice cancelled one", list(bob), img)
	})

	t.Run("disable", func(t *testing.T) {
		bob.refused(api.CodeUnauthorizedOperation, "image", "disable", img)
		alice.ok("image", "disable", img)
		alice.ok("image", "disable", pub)
		var im api.Image
		decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &im)
		if im.State != "disabled" || im.Public || im.LaunchPermission == nil || len(im.LaunchPermission.Users) != 0 {
			t.Errorf("disabled: state %s, public %v, launch permission %+v; want disabled, shared with no one", im.State, im.Public, im.LaunchPermission)
		}
		sees("alice", list(alice))
		sees("alice --include-disabled", list(alice, "--include-disabled"), img, pub)
		sees("bob --include-disabled", list(bob, "--include-disabled", "--include-deprecated"))
		sees("dave --include-disabled", list(dave, "--include-disabled", "--include-deprecated"))
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", img)
		bob.refused(api.CodeInvalidAMIIDNotFound, "run", img, "--type", "nano")
		dave.refused(api.CodeInvalidAMIIDNotFound, "run", pub, "--type", "nano")
		alice.refused(api.CodeIncorrectState, "run", img, "--type", "nano") // refused before any boot
		alice.refused(api.CodeIncorrectState, "image", "copy", img, "lc-copy")
		alice.refused(api.CodeIncorrectState, "image", "share", img, "--user", "bob")
		alice.refused(api.CodeIncorrectState, "image", "disable", img)
		// Enabled: available, and shared with no one until shared again (as in EC2).
		alice.ok("image", "enable", img)
		alice.ok("image", "enable", pub)
		alice.refused(api.CodeIncorrectState, "image", "enable", img)
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", img)
		dave.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", pub)
		alice.ok("image", "share", img, "--user", "bob")
		alice.ok("image", "share", pub, "--public")
		sees("bob once shared again", list(bob, "--include-deprecated"), img, pub)
	})

	t.Run("protect", func(t *testing.T) {
		p1 := alice.ok("image", "copy", img, "lc-p1", "-q")
		alice.ok("image", "protect", p1)
		alice.refused(api.CodeIncorrectState, "image", "deregister", p1)
		alice.ok("image", "unprotect", p1)
		alice.ok("image", "deregister", p1) // no cooldown: at once

		p2 := alice.ok("image", "copy", img, "lc-p2", "-q")
		alice.ok("image", "share", p2, "--user", "bob")
		bob.refused(api.CodeUnauthorizedOperation, "image", "protect", p2)
		dave.refused(api.CodeInvalidAMIIDNotFound, "image", "protect", p2)
		alice.ok("image", "protect", p2, "--cooldown")
		protection := func(a *account) string {
			var im api.Image
			decodeJSON(t, a.ok("image", "inspect", p2, "-o", "json"), &im)
			return im.DeregistrationProtection
		}
		if got := protection(bob); got != "enabled-with-cooldown" {
			t.Errorf("bob sees protection %q; want enabled-with-cooldown", got)
		}
		bob.refused(api.CodeUnauthorizedOperation, "image", "unprotect", p2)
		alice.ok("image", "unprotect", p2)
		got := protection(alice)
		until, err := time.Parse(time.RFC3339, strings.TrimPrefix(got, "disabled-until "))
		if err != nil || !strings.HasPrefix(got, "disabled-until ") {
			t.Fatalf("after unprotect with a cooldown: %q; want disabled-until TIME", got)
		}
		if d := time.Until(until) - clock.offset; d < 23*time.Hour || d > 25*time.Hour {
			t.Errorf("the cooldown ends in %s; want 24h", d)
		}
		alice.refused(api.CodeIncorrectState, "image", "deregister", p2)
		clock.advance(23 * time.Hour)
		alice.refused(api.CodeIncorrectState, "image", "deregister", p2)
		clock.advance(2 * time.Hour)
		if got := protection(alice); got != "disabled" {
			t.Errorf("after the cooldown: %q; want disabled", got)
		}
		alice.ok("image", "deregister", p2)
	})

	t.Run("recycle-bin", func(t *testing.T) {
		rule := alice.ok("recycle-bin", "rule", "create", "--resource", "image", "--retention", "7d", "-q")
		if got := idsOf(alice.ok("recycle-bin", "rule", "ls", "-q")); !slices.Equal(got, []string{rule}) {
			t.Errorf("alice's rules: %v; want [%s]", got, rule)
		}
		if got := bob.ok("recycle-bin", "rule", "ls", "-q"); got != "" {
			t.Errorf("bob lists alice's rules: %q", got)
		}
		bob.refused(api.CodeResourceNotFound, "recycle-bin", "rule", "rm", rule)
		alice.refused(api.CodeInvalidParameterValue, "recycle-bin", "rule", "create", "--resource", "instance", "--retention", "7d")
		alice.refused(api.CodeInvalidParameterValue, "recycle-bin", "rule", "create", "--resource", "image", "--retention", "400d")

		_, errs, code := alice.kiln("image", "deregister", img)
		if code != 0 || !strings.Contains(errs, "recycle bin") {
			t.Fatalf("deregister with a rule: exit %d, stderr %q; want it said to be in the recycle bin", code, errs)
		}
		if got := idsOf(alice.ok("recycle-bin", "ls", "-q")); !slices.Equal(got, []string{img}) {
			t.Errorf("alice's recycle bin: %v; want [%s]", got, img)
		}
		for _, a := range []*account{bob, dave} {
			if got := a.ok("recycle-bin", "ls", "-q"); got != "" {
				t.Errorf("%s's recycle bin shows %q", a.name, got)
			}
			a.refused(api.CodeInvalidAMIIDNotFound, "image", "restore", img)
		}
		// In the bin it is no image: not listed, not found, not launchable, by anyone.
		for _, a := range []*account{alice, bob} {
			sees(a.name+" with the image in the bin", list(a, "--include-deprecated", "--include-disabled"), pub)
			a.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", img)
			a.refused(api.CodeInvalidAMIIDNotFound, "run", img, "--type", "nano")
		}
		alice.refused(api.CodeInvalidAMIIDNotFound, "image", "deregister", img)
		// Its snapshot is not deleted under it, and gc keeps its content.
		alice.refused(api.CodeIncorrectState, "snapshot", "rm", mine.BlockDeviceMappings[0].EBS.SnapshotID)
		if _, err := k.GC(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(manifest); err != nil {
			t.Errorf("gc with the image in the bin: %v", err)
		}

		// Restored: the same id, content and launch permissions.
		var back api.Image
		decodeJSON(t, alice.ok("image", "restore", "lc-image", "-o", "json"), &back)
		if back.ID != img || back.ManifestDigest != mine.ManifestDigest || back.State != "available" ||
			back.LaunchPermission == nil || !slices.Equal(back.LaunchPermission.Users, []string{"bob"}) {
			t.Errorf("restored: %s, manifest %s, state %s, launch permission %+v; want %s, %s, available, users [bob]",
				back.ID, back.ManifestDigest, back.State, back.LaunchPermission, img, mine.ManifestDigest)
		}
		if got := bob.ok("image", "inspect", img, "-q"); got != img {
			t.Errorf("bob's inspect of the restored image: %q", got)
		}
		if got := alice.ok("recycle-bin", "ls", "-q"); got != "" {
			t.Errorf("the bin after the restore: %q", got)
		}

		// Past its retention: not restorable, and gone for good at the next gc.
		alice.ok("image", "deregister", img, pub)
		clock.advance(7*24*time.Hour + time.Minute)
		alice.refused(api.CodeInvalidAMIIDNotFound, "image", "restore", img)
		if got := alice.ok("recycle-bin", "ls", "-q"); got != "" {
			t.Errorf("the bin past the retention: %q", got)
		}
		if _, err := os.Stat(manifest); err != nil {
			t.Errorf("before gc: %v", err)
		}
		if _, err := k.GC(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(manifest); !os.IsNotExist(err) {
			t.Errorf("gc past the retention left the image's manifest: %v", err)
		}
		if blobs := k.blobs(); len(blobs) != 0 {
			t.Errorf("gc past the retention left %d blobs", len(blobs))
		}
		alice.refused(api.CodeInvalidAMIIDNotFound, "image", "restore", img)
	})

	t.Run("rule-lock", func(t *testing.T) {
		alice.refused(api.CodeInvalidParameterValue, "recycle-bin", "rule", "create", "--resource", "snapshot", "--retention", "1d", "--lock", "7d", "--tag", "env=prod")
		rule := alice.ok("recycle-bin", "rule", "create", "--resource", "snapshot", "--retention", "1d", "--lock", "7d", "-q")
		alice.refused(api.CodeIncorrectState, "recycle-bin", "rule", "rm", rule)
		alice.ok("recycle-bin", "rule", "unlock", rule)
		alice.refused(api.CodeIncorrectState, "recycle-bin", "rule", "unlock", rule)
		alice.refused(api.CodeIncorrectState, "recycle-bin", "rule", "rm", rule)
		var r api.Rule
		decodeJSON(t, alice.ok("recycle-bin", "rule", "inspect", rule, "-o", "json"), &r)
		if r.LockState != api.LockPendingUnlock || r.LockEndTime == nil {
			t.Errorf("an unlocked rule: %s, end %v; want pending_unlock with its end", r.LockState, r.LockEndTime)
		}
		clock.advance(7*24*time.Hour + time.Minute)
		alice.ok("recycle-bin", "rule", "rm", rule)
	})
}
