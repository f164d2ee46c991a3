package builder

import (
	"fmt"

	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/containerd/errdefs"
	diskfs "github.com/diskfs/go-diskfs"

	"kiln/images"
	"kiln/volumes"

	"kiln/internal/kilntest"
)

func TestDeviceNames(t *testing.T) {
	for _, tc := range []struct {
		given []string
		want  string
		ok    bool
	}{
		{[]string{"", ""}, "/dev/vda /dev/vdb", true},
		{[]string{"/dev/vdc", ""}, "/dev/vdc /dev/vda", true},
		{[]string{"", "/dev/vda"}, "/dev/vdb /dev/vda", true},
		{[]string{"/dev/vda", "/dev/vda"}, "", false},
		{[]string{"/dev/sda"}, "", false},
		{[]string{"/dev/vda1"}, "", false},
	} {
		var disks []Disk
		for _, g := range tc.given {
			disks = append(disks, Disk{DeviceName: g})
		}
		got, err := deviceNames(disks)
		if (err == nil) != tc.ok || tc.ok && strings.Join(got, " ") != tc.want {
			t.Errorf("deviceNames(%q) = %q, %v; want %q", tc.given, got, err, tc.want)
		}
	}
}

func newBuilder(t *testing.T) *Builder {
	t.Helper()
	kilntest.Need(t, "qemu-img")
	root := t.TempDir()
	s, err := images.Open(context.Background(), root, kilntest.MetaDB(t, root))
	if err != nil {
		t.Fatal(err)
	}
	return &Builder{Store: s}
}

func qcow2(t *testing.T, dir, name, size string) string {
	p := filepath.Join(dir, name)
	if out, err := kilntest.Command(t, "qemu-img", "create", "-q", "-f", "qcow2", p, size).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return p
}

func TestRegisterTwoDisks(t *testing.T) {
	b := newBuilder(t)
	ctx := context.Background()
	d := t.TempDir()
	root, data := qcow2(t, d, "root.qcow2", "3G"), qcow2(t, d, "data.qcow2", "100M")
	reg, err := b.Prepare(ctx, RegisterRequest{
		Name: "two-disks", OwnerID: "alice", RootDeviceType: "instance-store",
		Disks: []Disk{diskFile(t, root, "qcow2", ""), diskFile(t, data, "qcow2", "/dev/vdc")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reg.Image.State != images.StatePending {
		t.Fatalf("prepared image is %s", reg.Image.State)
	}
	im, err := reg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if im.State != images.StateAvailable || im.RootDeviceName != "/dev/vda" || im.RootDeviceType != "instance-store" || len(im.BlockDeviceMappings) != 2 {
		t.Fatalf("image: %+v", im)
	}
	vda, vdc := im.BlockDeviceMappings[0], im.BlockDeviceMappings[1]
	if vda.DeviceName != "/dev/vda" || vda.EBS.VolumeSize != 3 || vdc.DeviceName != "/dev/vdc" || vdc.EBS.VolumeSize != 1 {
		t.Errorf("mappings: %+v %+v, %+v %+v", vda, vda.EBS, vdc, vdc.EBS)
	}
	for _, m := range im.BlockDeviceMappings {
		sn, err := b.Store.Snapshot(m.EBS.SnapshotID)
		if err != nil || sn.ImageID != im.ID || sn.Layer != m.EBS.Layer || sn.OwnerID != "alice" {
			t.Errorf("snapshot %s: %+v, %v", m.EBS.SnapshotID, sn, err)
		}
	}
	// Both disks are empty: the same empty layer? No: their sizes differ, so their
	// headers do; each layer is its own blob.
	if vda.EBS.Layer == vdc.EBS.Layer {
		t.Error("disks of different sizes gave one layer")
	}
}

func TestRegisterCancelledFails(t *testing.T) {
	b := newBuilder(t)
	d := t.TempDir()
	reg, err := b.Prepare(context.Background(), RegisterRequest{Name: "cancelled", OwnerID: "alice", Disks: []Disk{diskFile(t, qcow2(t, d, "a.qcow2", "1G"), "qcow2", "")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	im, err := reg.Run(ctx)
	if err == nil || im == nil || im.State != images.StateFailed || !strings.Contains(im.StateReason, "cancel") {
		t.Fatalf("cancelled register: %+v, %v", im, err)
	}
	if n := len(b.Store.Snapshots()); n != 0 {
		t.Errorf("a failed register left %d snapshots", n)
	}
}

func TestPrepareRefuses(t *testing.T) {
	b := newBuilder(t)
	d := t.TempDir()
	disk := qcow2(t, d, "a.qcow2", "1M")
	kernel, empty := filepath.Join(d, "vmlinuz"), filepath.Join(d, "empty")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(empty, nil, 0o644)
	disks := func() []Disk { return []Disk{diskFile(t, disk, "qcow2", "")} }
	for _, req := range []func() RegisterRequest{
		func() RegisterRequest { return RegisterRequest{Name: "ok-name", Disks: disks(), Architecture: "sparc"} },
		func() RegisterRequest { return RegisterRequest{Name: "ok-name", Disks: disks(), BootMode: "coreboot"} },
		func() RegisterRequest {
			return RegisterRequest{Name: "ok-name", Disks: disks(), Cmdline: "console=ttyS0"}
		},
		func() RegisterRequest {
			return RegisterRequest{Name: "ok-name", Disks: disks(), Kernel: openFile(t, kernel)}
		},
		func() RegisterRequest {
			return RegisterRequest{Name: "ok-name", Disks: disks(), Kernel: openFile(t, kernel), Initrd: openFile(t, empty)}
		},
		func() RegisterRequest {
			return RegisterRequest{Name: "ok-name", Disks: disks(), Kernel: openFile(t, d), Initrd: openFile(t, kernel)}
		},
		func() RegisterRequest {
			return RegisterRequest{Name: "ok-name", Disks: disks(), Kernel: openFile(t, kernel), Initrd: openFile(t, kernel), Cmdline: "a\nb"}
		},
		func() RegisterRequest { return RegisterRequest{Name: "ok-name", Disks: disks(), Description: "bell\a"} },
	} {
		r := req()
		if _, err := b.Prepare(context.Background(), r); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Prepare(%+v) = %v, want InvalidArgument", r, err)
		}
		for _, f := range r.Files() {
			if _, err := f.Stat(); err == nil {
				t.Errorf("Prepare refused %+v but left %s open", r, f.Name())
			}
		}
	}
	if n, _ := b.Store.Counts(); n != 0 {
		t.Errorf("refused requests stored %d images", n)
	}
}

// openFile opens path as a caller does before passing it to kilnd.
func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func diskFile(t *testing.T, path, format, device string) Disk {
	return Disk{Source: volumes.Source{File: openFile(t, path), Name: path, Format: format}, DeviceName: device}
}

func TestWriteSeed(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "seed.iso")
	ud := []byte("#!/bin/sh\necho hello\n")
	if err := WriteSeed(p, ud, []byte("instance-id: i-0123456789abcdef0\n")); err != nil {
		t.Fatal(err)
	}
	disk, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	fs, err := disk.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	if l := strings.Trim(fs.Label(), " \x00"); !strings.EqualFold(l, "cidata") {
		t.Errorf("label %q", l)
	}
	f, err := fs.OpenFile("/user-data", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	if string(got) != string(ud) {
		t.Errorf("user-data reads back as %q", got)
	}
	if err := WriteSeed(filepath.Join(d, "big.iso"), make([]byte, MaxUserData+1), nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("oversized user data: %v", err)
	}
}

// TestCaptureFlattens: a capture over a chain of MaxChain layers makes one layer that
// holds the whole disk, with every generation's data.
func TestCaptureFlattens(t *testing.T) {
	b := newBuilder(t)
	ctx := context.Background()
	d := t.TempDir()
	base := qcow2(t, d, "base.qcow2", "64M")
	reg, err := b.Prepare(ctx, RegisterRequest{Name: "base-image", OwnerID: "alice", Disks: []Disk{diskFile(t, base, "qcow2", "")}})
	if err != nil {
		t.Fatal(err)
	}
	im, err := reg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chain := []digest.Digest{im.BlockDeviceMappings[0].EBS.Layer}
	// Generation i writes pattern i at i MiB, in an overlay captured as a layer.
	gen := func(i int) string {
		top := filepath.Join(d, fmt.Sprintf("top-%d.qcow2", i))
		if err := b.Tool.CreateOverlay(ctx, top, b.Store.BlobPath(chain[len(chain)-1]), 64<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := kilntest.Command(t, "qemu-io", "-c", fmt.Sprintf("write -P %d %dM 64k", i, i), top).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		return top
	}
	for i := 1; len(chain) < MaxChain; i++ {
		top := gen(i)
		c, err := b.PrepareCapture(CaptureRequest{Name: fmt.Sprintf("gen-%d", i), OwnerID: "alice", Source: im,
			Volumes: []CaptureVolume{{DeviceName: "/dev/vda", Files: []string{top}, Chain: chain, SizeGiB: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if c.Captured[0].Flattened {
			t.Fatalf("flattened at %d layers", len(chain)+1)
		}
		if done, total := c.Progress(); done != total || total != fileSize(t, top) {
			t.Errorf("generation %d: progress %d of %d; want the top's %d bytes of them", i, done, total, fileSize(t, top))
		}
		chain = append(chain, c.Captured[0].Layers...)
	}
	top := gen(MaxChain)
	c, err := b.PrepareCapture(CaptureRequest{Name: "deep", OwnerID: "alice", Source: im,
		Volumes: []CaptureVolume{{DeviceName: "/dev/vda", Files: []string{top}, Chain: chain, SizeGiB: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	deep, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Captured[0].Flattened {
		t.Fatalf("a chain of %d was not flattened", len(chain)+1)
	}
	// The flatten's progress counted what it wrote, and ends at its total: the top and
	// the layers read under it.
	want := fileSize(t, top)
	for _, l := range chain {
		want += fileSize(t, b.Store.BlobPath(l))
	}
	if done, total := c.Progress(); done != total || total != want {
		t.Errorf("progress after the flatten: %d of %d; want %d of %d", done, total, want, want)
	}
	sn, _ := b.Store.Snapshot(deep.BlockDeviceMappings[0].EBS.SnapshotID)
	if len(sn.Chain) != 1 {
		t.Errorf("flattened snapshot chain: %v", sn.Chain)
	}
	layer := b.Store.BlobPath(sn.Layer)
	for i := 1; i <= MaxChain; i++ {
		out, err := kilntest.Command(t, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P %d %dM 64k", i, i), layer).CombinedOutput()
		if err != nil || strings.Contains(string(out), "fail") {
			t.Errorf("generation %d in the flattened layer: %v %s", i, err, out)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
