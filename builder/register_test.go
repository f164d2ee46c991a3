package builder

import (
	"fmt"

	"context"
	"github.com/opencontainers/go-digest"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	diskfs "github.com/diskfs/go-diskfs"

	"kiln/images"
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
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-img is missing: run 'make deps'")
		}
		t.Skip("qemu-img is missing")
	}
	s, err := images.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &Builder{Store: s}
}

func qcow2(t *testing.T, dir, name, size string) string {
	p := filepath.Join(dir, name)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", p, size).CombinedOutput(); err != nil {
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
		Disks: []Disk{{Path: root, Format: "qcow2"}, {Path: data, Format: "qcow2", DeviceName: "/dev/vdc"}},
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
	reg, err := b.Prepare(context.Background(), RegisterRequest{Name: "cancelled", OwnerID: "alice", Disks: []Disk{{Path: qcow2(t, d, "a.qcow2", "1G"), Format: "qcow2"}}})
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
	kernel := filepath.Join(d, "vmlinuz")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	for _, req := range []RegisterRequest{
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Architecture: "sparc"},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, BootMode: "coreboot"},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Cmdline: "console=ttyS0"},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Kernel: kernel, Initrd: filepath.Join(d, "missing")},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Kernel: "vmlinuz", Initrd: "initrd"},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Kernel: kernel, Initrd: kernel, Cmdline: "a\nb"},
		{Name: "ok-name", Disks: []Disk{{Path: disk, Format: "qcow2"}}, Description: "bell\a"},
	} {
		if _, err := b.Prepare(context.Background(), req); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Prepare(%+v) = %v, want InvalidArgument", req, err)
		}
	}
	if n, _ := b.Store.Counts(); n != 0 {
		t.Errorf("refused requests stored %d images", n)
	}
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
	reg, err := b.Prepare(ctx, RegisterRequest{Name: "base-image", OwnerID: "alice", Disks: []Disk{{Path: base, Format: "qcow2"}}})
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
		if out, err := exec.Command("qemu-io", "-c", fmt.Sprintf("write -P %d %dM 64k", i, i), top).CombinedOutput(); err != nil {
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
	sn, _ := b.Store.Snapshot(deep.BlockDeviceMappings[0].EBS.SnapshotID)
	if len(sn.Chain) != 1 {
		t.Errorf("flattened snapshot chain: %v", sn.Chain)
	}
	layer := b.Store.BlobPath(sn.Layer)
	for i := 1; i <= MaxChain; i++ {
		out, err := exec.Command("qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P %d %dM 64k", i, i), layer).CombinedOutput()
		if err != nil || strings.Contains(string(out), "fail") {
			t.Errorf("generation %d in the flattened layer: %v %s", i, err, out)
		}
	}
}
