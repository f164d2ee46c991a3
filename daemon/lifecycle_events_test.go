package daemon_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"kiln/daemon"
	"kiln/daemon/api"
)

// TestImageLifecycleEvents is the seam of issue 17's image lifecycle and its event log:
// each state change of an image (disable, enable, into the recycle bin, restore, a copy
// deleted at once) is told once, to its owner alone; what changes no state (share,
// deprecate, protect, tag) tells nothing; the purge at gc past the retention tells
// nothing more of the image (its deregistration was told as it went into the bin) and
// its snapshot's deletion once, however many gcs follow. No guest is started.
func TestImageLifecycleEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kilnd")
	}
	d := publicDir(t)
	k := kilndIn(t, d, "debug")
	users := accounts(t, k.Socket)
	alice, bob := users["alice"], users["bob"]
	clock := newTestClock(t, d)
	k.Env = []string{daemon.TestClockEnv + "=" + clock.path}
	k.Start()

	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "ev-image", "--wait", "-q"}, g.RegisterFlags()...)...)
	var im api.Image
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &im)
	snap := im.BlockDeviceMappings[0].EBS.SnapshotID
	cp := alice.ok("image", "copy", img, "ev-copy", "-q")
	alice.ok("image", "deregister", cp) // no rule yet: deleted at once

	alice.ok("image", "share", img, "--user", "bob")
	alice.ok("image", "deprecate", img, "--at", "1h")
	alice.ok("image", "protect", img)
	alice.ok("image", "unprotect", img)
	alice.ok("image", "tag", img, "k=v")
	alice.ok("image", "disable", img)
	alice.ok("image", "enable", img)
	alice.ok("recycle-bin", "rule", "create", "--resource", "image", "--retention", "1d")
	alice.ok("image", "deregister", img)
	alice.ok("image", "restore", img)
	alice.ok("image", "deregister", img)
	clock.advance(24*time.Hour + time.Minute)
	for range 2 {
		if _, err := k.GC(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}

	evs := jsonLines(t, alice.ok("events", "-o", "json"))
	states := map[string][]string{}
	for _, ev := range evs {
		_, r, s := ev.Summary()
		states[r] = append(states[r], s)
		if ev.Account != "alice" {
			t.Errorf("event %d is %s's: %+v", ev.Sequence, ev.Account, ev)
		}
	}
	for r, want := range map[string][]string{
		img:  {"pending", "available", "disabled", "available", "deregistered", "available", "deregistered"},
		cp:   {"available", "deregistered"},
		snap: {"succeeded", "deleted"},
	} {
		if !slices.Equal(states[r], want) {
			t.Errorf("%s entered %v; want %v\n%s", r, states[r], want, briefEvents(evs))
		}
	}
	if len(states) != 3 {
		t.Errorf("events of %d resources; want 3 (the image, its copy, its snapshot):\n%s", len(states), briefEvents(evs))
	}
	if out := bob.ok("events", "-o", "json"); strings.TrimSpace(out) != "" {
		t.Errorf("bob, whom the image was shared with, sees its events:\n%s", out)
	}
}
