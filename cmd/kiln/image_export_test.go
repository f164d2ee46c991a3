package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/daemon/client"
	"kiln/internal/kilntest"
)

// TestExportImport: kiln image export writes an OCI image layout tar that kiln image
// import reads into another, empty kilnd with every digest kept, and the image boots
// there; the same tar with one byte of its disk layer flipped is refused, leaving no
// image, no ingest and not the layer.
func TestExportImport(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	ka, kb := startKilnd(t), startKilnd(t)
	a, b := ka.Socket, kb.Socket
	registerGuest(t, a, "kiln-guest", kilntest.GuestCmdline)
	dir := t.TempDir()
	good := filepath.Join(dir, "guest.tar")
	code, out, errOut := kiln(t, a, "image", "export", "kiln-guest", "-o", good, "-q")
	if code != 0 {
		t.Fatalf("export: exit %d, %q, %q", code, out, errOut)
	}
	exported := strings.TrimSpace(out)
	lay := readLayout(t, good)
	if lay.manifest != exported || len(lay.layers) != 3 {
		t.Fatalf("the exported tar names manifest %s with layers %v; export said %s", lay.manifest, lay.layers, exported)
	}

	// One byte flipped in the middle of the disk layer: refused, nothing kept.
	bad := filepath.Join(dir, "bad.tar")
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	raw[lay.diskOffset+lay.diskSize/2] ^= 0xff
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = kiln(t, b, "image", "import", bad)
	if code != 1 || !strings.Contains(errOut, "digest") {
		t.Errorf("import of a tar with a flipped byte: exit %d, %q; want 1 and the digest that does not match", code, errOut)
	}
	cb := client.New(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if list, err := cb.Images(ctx, client.ListImagesOptions{}); err != nil || len(list) != 0 {
		t.Errorf("images after a refused import: %v, %v", list, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(kb.Root, "content", "ingest")); len(ents) != 0 {
		t.Errorf("ingests after a refused import: %d", len(ents))
	}
	if _, err := os.Stat(filepath.Join(kb.Root, "content", "blobs", "sha256", lay.disk)); err == nil {
		t.Errorf("the refused layer %s is in the store", lay.disk)
	}

	// The tar as written: imported, every digest kept, and it boots.
	code, out, errOut = kiln(t, b, "image", "import", good, "--name", "imported")
	if code != 0 || !strings.Contains(out, "available, imported from") {
		t.Fatalf("import: exit %d, %q, %q\n%s", code, out, errOut, kilntest.Tail(kb.Log.String(), 20))
	}
	im, err := cb.Image(ctx, "imported")
	if err != nil || im.SourceDigest != exported || !strings.HasPrefix(im.SourceRef, "oci-archive:") {
		t.Fatalf("imported image: %+v, %v; want source digest %s", im, err, exported)
	}
	again := filepath.Join(dir, "again.tar")
	if code, _, errOut = kiln(t, b, "image", "export", "imported", "-o", again); code != 0 {
		t.Fatalf("export of the imported image: exit %d, %q", code, errOut)
	}
	if back := readLayout(t, again); strings.Join(back.layers, ",") != strings.Join(lay.layers, ",") {
		t.Errorf("layers after the round trip: %v; want %v", back.layers, lay.layers)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := cb.Instances(ctx, false)
		for _, inst := range list {
			cb.InstanceAction(ctx, inst.ID, "terminate", true)
		}
	})
	if code, out, errOut = kiln(t, b, "run", "imported", "--name", "imp", "--type", "nano", "--wait", "--timeout", "4m", "-q"); code != 0 {
		t.Fatalf("run the imported image: exit %d, %q, %q\n%s", code, out, errOut, kilntest.InstancesEvidence(filepath.Join(filepath.Dir(b), "root")))
	}
}

// layoutTar is what a test reads of an OCI image layout tar.
type layoutTar struct {
	manifest   string   // its one manifest's digest
	layers     []string // the manifest's layers' digests
	disk       string   // the hex digest of its qcow2 layer
	diskOffset int64    // where that layer's bytes start in the tar
	diskSize   int64
}

func readLayout(t *testing.T, file string) layoutTar {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string][2]int64{}
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		off, _ := f.Seek(0, io.SeekCurrent)
		entries[h.Name] = [2]int64{off, h.Size}
		if h.Size < 1<<20 {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
	var lay layoutTar
	var index ocispec.Index
	var m ocispec.Manifest
	if json.Unmarshal(files["oci-layout"], &ocispec.ImageLayout{}) != nil || json.Unmarshal(files["index.json"], &index) != nil || len(index.Manifests) != 1 {
		t.Fatalf("%s: not an OCI image layout of one image", file)
	}
	lay.manifest = index.Manifests[0].Digest.String()
	if err := json.Unmarshal(files[path.Join("blobs/sha256", index.Manifests[0].Digest.Encoded())], &m); err != nil {
		t.Fatalf("%s: manifest: %v", file, err)
	}
	for _, l := range m.Layers {
		lay.layers = append(lay.layers, l.Digest.String())
		if strings.Contains(l.MediaType, "qcow2") {
			lay.disk = l.Digest.Encoded()
			e := entries[path.Join("blobs/sha256", lay.disk)]
			lay.diskOffset, lay.diskSize = e[0], e[1]
		}
	}
	return lay
}
