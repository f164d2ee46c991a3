package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/internal/ids"
	"kiln/internal/kilntest"
)

func openStore(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(context.Background(), root, kilntest.MetaDB(t, root))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// layer ingests data as a layer written by a fill function, as register does.
func layer(t *testing.T, s *Store, ref string, data []byte) ocispec.Descriptor {
	t.Helper()
	desc, err := s.IngestLayer(context.Background(), ref, func(path string) error { return os.WriteFile(path, data, 0o600) })
	if err != nil {
		t.Fatal(err)
	}
	return desc
}

// imageOver stores an available image whose manifest names the layer, with a snapshot.
func imageOver(t *testing.T, s *Store, name string, l ocispec.Descriptor) *Image {
	t.Helper()
	ctx := context.Background()
	im := &Image{ID: ids.NewID(ImagePrefix), Name: name, OwnerID: "alice", State: StatePending, CreationDate: time.Now()}
	if err := s.CreateImage(im); err != nil {
		t.Fatal(err)
	}
	sn := &Snapshot{ID: ids.NewID(SnapshotPrefix), OwnerID: "alice", Layer: l.Digest, Chain: []digest.Digest{l.Digest}, ImageID: im.ID}
	if err := s.PutSnapshot(sn); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Architecture: "x86_64", BlockDeviceMappings: []BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &EBS{SnapshotID: sn.ID, Layer: l.Digest}}}}
	cdesc, err := s.WriteJSON(ctx, MediaTypeConfig, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mdesc, err := s.WriteManifest(ctx, cdesc, []ocispec.Descriptor{l})
	if err != nil {
		t.Fatal(err)
	}
	im, err = s.UpdateImage(im.ID, func(im *Image) error {
		im.Config, im.Manifest, im.State = cfg, mdesc.Digest, StateAvailable
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// blobs maps every blob file in the store to its size, checking it hashes to its name.
func blobs(t *testing.T, s *Store) map[string]int64 {
	t.Helper()
	dir := filepath.Join(s.Root(), "content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.Name() {
			t.Errorf("blob %s hashes to %s", e.Name(), got)
		}
		out[e.Name()] = n
	}
	return out
}

func TestIngestLayerDedup(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := []byte("pretend this is a qcow2 layer")
	a := layer(t, s, "a", data)
	b := layer(t, s, "b", data)
	if a.Digest != b.Digest || a.Digest != digest.FromBytes(data) || a.Size != int64(len(data)) {
		t.Fatalf("descriptors %v and %v for the same data", a, b)
	}
	if n := len(blobs(t, s)); n != 1 {
		t.Errorf("%d blobs after storing the same layer twice", n)
	}
	st, err := s.content.ListStatuses(context.Background())
	if err != nil || len(st) != 0 {
		t.Errorf("ingests left: %v, %v", st, err)
	}
}

func TestIngestLayerFailureLeavesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	_, err := s.IngestLayer(context.Background(), "x", func(path string) error {
		os.WriteFile(path, []byte("half"), 0o600)
		return errdefs.ErrInvalidArgument
	})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v", err)
	}
	if len(blobs(t, s)) != 0 {
		t.Error("a failed ingest left a blob")
	}
	st, _ := s.content.ListStatuses(context.Background())
	if len(st) != 0 {
		t.Errorf("a failed ingest left %d ingests", len(st))
	}
}

func TestRecordsPersistAndPendingFails(t *testing.T) {
	root := t.TempDir()
	s := openStore(t, root)
	avail := imageOver(t, s, "kept", layer(t, s, "l", []byte("layer")))
	pending := &Image{ID: ids.NewID(ImagePrefix), Name: "half", OwnerID: "alice", State: StatePending}
	if err := s.CreateImage(pending); err != nil {
		t.Fatal(err)
	}
	// A snapshot made for the pending image before the daemon stopped.
	half := layer(t, s, "half", []byte("half an image"))
	if err := s.PutSnapshot(&Snapshot{ID: ids.NewID(SnapshotPrefix), Layer: half.Digest, Chain: []digest.Digest{half.Digest}, ImageID: pending.ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(&Image{ID: ids.NewID(ImagePrefix), Name: "kept", OwnerID: "alice"}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("duplicate name for the same owner: %v", err)
	}
	if err := s.CreateImage(&Image{ID: ids.NewID(ImagePrefix), Name: "kept", OwnerID: "bob"}); err != nil {
		t.Errorf("same name, other owner: %v", err)
	}
	s.db.Close() // as kilnd does when it stops

	s = openStore(t, root)
	got, err := s.Image(avail.ID)
	if err != nil || got.State != StateAvailable || got.Manifest != avail.Manifest || len(got.BlockDeviceMappings) != 1 {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
	failed, err := s.Image(pending.ID)
	if err != nil || failed.State != StateFailed || failed.StateReason == "" {
		t.Errorf("pending image after reopen: %+v, %v", failed, err)
	}
	if n, sn := s.Counts(); n != 3 || sn != 1 {
		t.Errorf("counts after reopen: %d images, %d snapshots", n, sn)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	shared := layer(t, s, "shared", []byte("shared layer"))
	own := layer(t, s, "own", []byte("only a's layer"))
	a := imageOver(t, s, "a-image", own)
	imageOver(t, s, "b-image", shared)
	c := imageOver(t, s, "c-image", shared)

	// An abandoned ingest, as a killed daemon leaves it.
	w, err := s.content.Writer(ctx, contentRef("abandoned"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half a layer"))
	w.Close()

	before := blobs(t, s)
	res, err := s.GC(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsRemoved != 0 || res.IngestsRemoved != 1 {
		t.Errorf("gc with everything referenced: %+v", res)
	}
	if len(blobs(t, s)) != len(before) {
		t.Error("gc removed referenced blobs")
	}

	for _, im := range []*Image{a, c} {
		if _, err := s.DeleteImage(im.ID); err != nil {
			t.Fatal(err)
		}
	}
	if res, err = s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	after := blobs(t, s)
	if _, ok := after[own.Digest.Encoded()]; ok {
		t.Error("gc kept the layer only a deleted image used")
	}
	if _, ok := after[shared.Digest.Encoded()]; !ok {
		t.Error("gc removed the layer a remaining image uses")
	}
	// a's layer, config, manifest; c's config and manifest.
	if res.BlobsRemoved != 5 {
		t.Errorf("gc removed %d blobs, want 5", res.BlobsRemoved)
	}
	if n, sn := s.Counts(); n != 1 || sn != 1 {
		t.Errorf("after deleting two of three images: %d images, %d snapshots", n, sn)
	}
}

// A GC waiting for a long hold (a register) holds back no one else: a second hold (a
// launch) is taken at once; the GC runs once both are released, and one that cannot
// get the store before its context ends says so.
func TestGCWaitsWithoutHoldingBack(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir())
	release := s.Hold() // a long register
	done := make(chan error, 1)
	go func() { _, err := s.GC(ctx, nil); done <- err }()
	time.Sleep(200 * time.Millisecond) // time for the GC to start waiting: what is checked is that nothing waits behind it
	second := make(chan func(), 1)
	go func() { second <- s.Hold() }()
	select {
	case r := <-second:
		r()
	case <-time.After(10 * time.Second): // a hold behind the GC would wait until release()
		t.Fatal("a hold (a launch) waited behind a GC that waits for another hold")
	}
	select {
	case err := <-done:
		t.Fatalf("GC ran while a hold was held: %v", err)
	default:
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GC did not run within 5s of the holds' release")
	}

	release = s.Hold()
	defer release()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.GC(cctx, nil); !errdefs.IsUnavailable(err) {
		t.Errorf("GC while a hold is held until its context ends: %v", err)
	}
}
