package imaging_test

import (
	"context"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"kiln/daemon/imaging"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/images"
	"kiln/internal/ids"
	"kiln/internal/kilntest"
	"kiln/volumes"
)

// TestDeregisterChecksProtectionWithTheChange: deregistration protection turned on
// while a deregister is under way (after it looked at the image, before it changed
// it) holds: the image is neither deleted nor put into the recycle bin, whichever the
// rules say. The retention callback runs between the two, so it plays the other
// request.
func TestDeregisterChecksProtectionWithTheChange(t *testing.T) {
	store, x := newImages(t, quota.Quota{})
	alice := peer.Caller{UID: 1000, User: "alice"}
	for _, bin := range []bool{false, true} {
		im := &images.Image{ID: ids.NewID(images.ImagePrefix), Name: "protected-meanwhile", OwnerID: "alice", State: images.StateAvailable,
			CreationDate: time.Now(), Manifest: digest.FromString("a manifest")}
		if err := store.CreateImage(im); err != nil {
			t.Fatal(err)
		}
		_, err := x.Deregister(alice, im.ID, func(string, map[string]string) (time.Duration, bool) {
			if _, err := x.Protect(alice, im.ID, false); err != nil {
				t.Fatal(err)
			}
			return 24 * time.Hour, bin
		})
		if !errdefs.IsFailedPrecondition(err) {
			t.Errorf("bin %v: deregister of an image protected meanwhile: %v; want refused", bin, err)
		}
		got, err := store.Image(im.ID)
		if err != nil || got.InBin() || !got.Protected {
			t.Fatalf("bin %v: the protected image after the deregister: %+v, %v; want it kept, protected, not in the bin", bin, got, err)
		}
		if _, err := x.Unprotect(alice, im.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := x.Deregister(alice, im.ID, func(string, map[string]string) (time.Duration, bool) { return 0, false }); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoreKeepsQuotas: an image in the recycle bin does not count against its
// owner's quotas, so a restore that would pass them (images, public images: others were
// made meanwhile) is refused, as the register or share that passes them would be.
func TestRestoreKeepsQuotas(t *testing.T) {
	store, x := newImages(t, quota.Quota{Images: 2, PublicImages: 1, ImagesInProgress: 1})
	alice := peer.Caller{UID: 1000, User: "alice"}
	n := 0
	image := func(public bool) *images.Image {
		t.Helper()
		release, err := x.Admit("alice")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		n++
		im := &images.Image{ID: ids.NewID(images.ImagePrefix), Name: "img-" + string(rune('a'+n)), OwnerID: "alice", State: images.StateAvailable,
			CreationDate: time.Now(), Manifest: digest.FromString("a manifest"), Public: public}
		if err := store.CreateImage(im); err != nil {
			t.Fatal(err)
		}
		return im
	}
	keep := func(string, map[string]string) (time.Duration, bool) { return 24 * time.Hour, true }

	pub := image(true)
	if _, err := x.Deregister(alice, pub.ID, keep); err != nil {
		t.Fatal(err)
	}
	other := image(true) // the public slot, free while pub is in the bin
	if _, err := x.Restore(alice, pub.ID); !errdefs.IsResourceExhausted(err) {
		t.Errorf("restoring a public image past the public images quota: %v; want refused", err)
	}
	if _, err := x.Deregister(alice, other.ID, func(string, map[string]string) (time.Duration, bool) { return 0, false }); err != nil {
		t.Fatal(err)
	}
	image(false)
	image(false) // the images quota (2) is full
	if _, err := x.Restore(alice, pub.ID); !errdefs.IsResourceExhausted(err) {
		t.Errorf("restoring an image past the images quota: %v; want refused", err)
	}
	if got := store.BinImages(time.Now()); len(got) != 1 || got[0].ID != pub.ID {
		t.Errorf("a refused restore left the bin with %v; want %s in it", got, pub.ID)
	}
}

// newImages is the image side over a new store in a temporary directory, no caller an
// administrator, everyone's quota q.
func newImages(t *testing.T, q quota.Quota) (*images.Store, *imaging.Images) {
	t.Helper()
	root := t.TempDir()
	store, err := images.Open(context.Background(), root, kilntest.MetaDB(t, root))
	if err != nil {
		t.Fatal(err)
	}
	return store, imaging.New(store, volumes.Tool{}, 0, func(peer.Caller) bool { return false }, func(string) quota.Quota { return q })
}
