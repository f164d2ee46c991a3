package images

import (
	"context"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"kiln/internal/ids"
	"kiln/internal/kilntest"
)

// TestBinImage: an image in the recycle bin frees its name, keeps its content from GC
// (across a reopen of the store), keeps its snapshots from deletion, comes back whole
// within its stay, and is deleted by PurgeBin after it, its content by the next GC.
func TestBinImage(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	db := kilntest.MetaDB(t, root)
	s, err := Open(ctx, root, db)
	if err != nil {
		t.Fatal(err)
	}
	l := layer(t, s, "l", []byte("the binned image's layer"))
	im := imageOver(t, s, "web", l)
	now := time.Now()
	if _, err := s.BinImage(im.ID, BinStay{Enter: now, Exit: now.Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BinImage(im.ID, BinStay{Enter: now, Exit: now.Add(time.Hour)}, nil); !errdefs.IsNotFound(err) {
		t.Errorf("binning it twice: %v; want not found", err)
	}
	if err := s.CheckNameFree("alice", "web"); err != nil {
		t.Errorf("the name of an image in the bin: %v; want it free", err)
	}
	if err := s.DeleteSnapshot(im.BlockDeviceMappings[0].EBS.SnapshotID); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("deleting the snapshot of an image in the bin: %v; want refused", err)
	}
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := blobs(t, s)[l.Digest.Encoded()]; !ok {
		t.Fatal("gc removed the layer of an image in the bin")
	}
	// The stay is on the record: it survives a restart.
	if s, err = Open(ctx, root, db); err != nil {
		t.Fatal(err)
	}
	if got := s.BinImages(now); len(got) != 1 || got[0].ID != im.ID {
		t.Fatalf("bin after reopening: %v", got)
	}
	// A new image took the name: the restore is refused, then allowed once it is gone.
	other := imageOver(t, s, "web", l)
	if _, err := s.RestoreImage(im.ID, now); !errdefs.IsAlreadyExists(err) {
		t.Errorf("restore while another has the name: %v; want already exists", err)
	}
	if _, err := s.DeleteImage(other.ID); err != nil {
		t.Fatal(err)
	}
	back, err := s.RestoreImage(im.ID, now.Add(time.Minute))
	if err != nil || back.Bin != nil || back.Manifest != im.Manifest || back.State != StateAvailable {
		t.Fatalf("restore: %+v, %v", back, err)
	}
	// Past the stay: not restorable, purged, collected.
	if _, err := s.BinImage(im.ID, BinStay{Enter: now, Exit: now.Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Hour)
	if _, err := s.RestoreImage(im.ID, later); !errdefs.IsNotFound(err) {
		t.Errorf("restore after the stay: %v; want not found", err)
	}
	purged, _, err := s.PurgeBin(later)
	if err != nil || len(purged) != 1 || purged[0] != im.ID {
		t.Fatalf("purge: %v, %v", purged, err)
	}
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(blobs(t, s)); n != 0 {
		t.Errorf("gc after the purge left %d blobs", n)
	}
}

// TestBinSnapshot: a snapshot in the bin is no snapshot (Snapshot, Snapshots) but a bin
// entry, keeps its layer from GC, comes back within its stay and goes after it.
func TestBinSnapshot(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	l := layer(t, s, "l", []byte("a standalone snapshot's layer"))
	sn := &Snapshot{ID: ids.NewID(SnapshotPrefix), OwnerID: "alice", Layer: l.Digest, Chain: []digest.Digest{l.Digest}}
	if err := s.PutSnapshot(sn); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.BinSnapshot(sn.ID, BinStay{Enter: now, Exit: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(sn.ID); !errdefs.IsNotFound(err) {
		t.Errorf("a snapshot in the bin: %v; want not found", err)
	}
	if len(s.Snapshots()) != 0 || len(s.BinSnapshots(now, false)) != 1 {
		t.Errorf("snapshots %d, in the bin %d; want 0 and 1", len(s.Snapshots()), len(s.BinSnapshots(now, false)))
	}
	if err := s.DeleteSnapshot(sn.ID); !errdefs.IsNotFound(err) {
		t.Errorf("deleting a snapshot in the bin: %v; want not found", err)
	}
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := blobs(t, s)[l.Digest.Encoded()]; !ok {
		t.Fatal("gc removed the layer of a snapshot in the bin")
	}
	if _, err := s.RestoreSnapshot(sn.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(sn.ID); err != nil {
		t.Errorf("the restored snapshot: %v", err)
	}
	if err := s.BinSnapshot(sn.ID, BinStay{Enter: now, Exit: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Hour)
	if len(s.BinSnapshots(later, false)) != 0 {
		t.Error("the bin lists a snapshot past its stay")
	}
	if _, err := s.RestoreSnapshot(sn.ID, later); !errdefs.IsNotFound(err) {
		t.Errorf("restore after the stay: %v; want not found", err)
	}
	_, purged, err := s.PurgeBin(later)
	if err != nil || len(purged) != 1 {
		t.Fatalf("purge: %v, %v", purged, err)
	}
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(blobs(t, s)); n != 0 {
		t.Errorf("gc after the purge left %d blobs", n)
	}
}

// TestProtection: the strings EC2 shows, and the cooldown's end.
func TestProtection(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	im := &Image{ID: "ami-0123456789abcdef0"}
	if got := im.Protection(now); got != ProtectionDisabled || im.CheckDeregister(now) != nil {
		t.Errorf("unprotected: %q", got)
	}
	im.Protect(false)
	if got := im.Protection(now); got != ProtectionEnabled || !errdefs.IsFailedPrecondition(im.CheckDeregister(now)) {
		t.Errorf("protected: %q", got)
	}
	im.Unprotect(now)
	if got := im.Protection(now); got != ProtectionDisabled || im.CheckDeregister(now) != nil {
		t.Errorf("unprotected without a cooldown: %q", got)
	}
	im.Protect(true)
	if got := im.Protection(now); got != ProtectionEnabledWithCooldown {
		t.Errorf("with a cooldown: %q", got)
	}
	im.Unprotect(now)
	if got := im.Protection(now); got != "disabled-until 2026-12-02T10:00:00Z" {
		t.Errorf("in the cooldown: %q", got)
	}
	if !errdefs.IsFailedPrecondition(im.CheckDeregister(now.Add(ProtectionCooldown - time.Second))) {
		t.Error("deregister allowed within the cooldown")
	}
	end := now.Add(ProtectionCooldown)
	if got := im.Protection(end); got != ProtectionDisabled || im.CheckDeregister(end) != nil {
		t.Errorf("after the cooldown: %q", got)
	}
}
