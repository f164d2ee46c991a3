package volumes

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/internal/kilntest"
)

// TestSniff: each format's signature is found in a file qemu-img made of that format
// (qemu-img 7.2), and nothing in a raw disk of random bytes or zeros, or in one too
// short to hold a header.
func TestSniff(t *testing.T) {
	need(t, "qemu-img")
	d := t.TempDir()
	secret := []string{"--object", "secret,id=s0,data=pw"}
	for _, c := range [][]string{
		{"-f", "qcow2", "x.qcow2", "8M"},
		{"-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "8M"},
		{"-f", "qcow", "x.qcow", "8M"},
		{"-f", "qed", "x.qed", "8M"},
		{"-f", "vmdk", "x.vmdk", "8M"},
		{"-f", "vmdk", "-o", "subformat=streamOptimized", "stream.vmdk", "8M"},
		{"-f", "vmdk", "-o", "subformat=monolithicFlat", "flat.vmdk", "8M"},
		{"-f", "vhdx", "x.vhdx", "8M"},
		{"-f", "vdi", "x.vdi", "8M"},
		{"-f", "vpc", "dynamic.vhd", "8M"},
		{"-f", "vpc", "-o", "subformat=fixed", "fixed.vhd", "8M"},
		append(append([]string{"-f", "luks"}, secret...), "-o", "key-secret=s0", "x.luks", "8M"),
		{"-f", "raw", "zeros.raw", "8M"},
	} {
		sh(t, d, append([]string{"qemu-img", "create", "-q"}, c...)...)
	}
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(i*7919 + i>>8)
	}
	for name, b := range map[string][]byte{"random.raw": random, "short.raw": []byte("QFI"), "empty.raw": nil} {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		file, format string
		descriptor   bool
	}{
		{"x.qcow2", "qcow2", false},
		{"v2.qcow2", "qcow2", false},
		{"x.qcow", "qcow", false},
		{"x.qed", "qed", false},
		{"x.vmdk", "vmdk", false},
		{"stream.vmdk", "vmdk", false},
		{"flat.vmdk", "vmdk", true},
		{"x.vhdx", "vhdx", false},
		{"x.vdi", "vdi", false},
		{"dynamic.vhd", "vpc", false},
		{"fixed.vhd", "vpc", false},
		{"x.luks", "luks", false},
		{"zeros.raw", "", false},
		{"random.raw", "", false},
		{"short.raw", "", false},
		{"empty.raw", "", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(d, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			l, err := Sniff(f, st.Size())
			if err != nil || l.Format != tc.format || l.Descriptor != tc.descriptor {
				t.Fatalf("Sniff = %+v, %v; want format %q, descriptor %v", l, err, tc.format, tc.descriptor)
			}
			if tc.format != "" && !strings.Contains(strings.ToLower(l.What), strings.TrimPrefix(tc.format, "vpc")) {
				t.Errorf("What %q does not name %s", l.What, tc.format)
			}
		})
	}
}

// TestCheckLooks: a disk given as another format than its bytes say is refused with
// the format it looks like and the flag that gives it; force-raw lifts the refusal for
// raw only; a disk that looks like what it is given as passes.
func TestCheckLooks(t *testing.T) {
	qcow2 := Lookalike{Format: "qcow2", What: `a qcow2 header ("QFI\xfb")`}
	for _, tc := range []struct {
		name, format string
		forceRaw     bool
		l            Lookalike
		says         []string // pieces of the error; none: accepted
	}{
		{"root.qcow2", "raw", false, qcow2, []string{"given as raw", "qcow2 header", "--disk root.qcow2,format=qcow2", "format=raw,force-raw"}},
		{"root.qcow2", "raw", true, qcow2, nil},
		{"root.qcow2", "qcow2", false, qcow2, nil},
		{"root.qcow2", "vhdx", false, qcow2, []string{"given as vhdx", "--disk root.qcow2,format=qcow2"}},
		{"root.qcow2", "vhdx", true, qcow2, []string{"given as vhdx"}}, // force-raw is raw's only
		{"d.vmdk", "qcow2", false, Lookalike{Format: "vmdk", What: "a VMDK sparse extent header"}, []string{"--disk d.vmdk,format=vmdk"}},
		{"d.vhdx", "raw", false, Lookalike{Format: "vhdx", What: "a VHDX header"}, []string{"--disk d.vhdx,format=vhdx"}},
		{"d.qed", "raw", false, Lookalike{Format: "qed", What: "a QED header"}, []string{"kiln does not take qed disks", "qemu-img convert -f qed -O qcow2 IN OUT"}},
		{"d.vhd", "raw", false, Lookalike{Format: "vpc", What: "a fixed VHD footer"}, []string{"qemu-img convert -f vpc -O qcow2"}},
		{"d.vdi", "qcow2", false, Lookalike{Format: "vdi", What: "a VirtualBox VDI header"}, []string{"-f vdi"}},
		{"d.luks", "raw", false, Lookalike{Format: "luks", What: "a LUKS header"}, []string{"encrypted", "driver=luks"}},
		{"d.vmdk", "raw", false, Lookalike{Format: "vmdk", What: "a VMDK descriptor", Descriptor: true}, []string{"descriptor names other files"}},
		{"d.vmdk", "vmdk", false, Lookalike{Format: "vmdk", What: "a VMDK descriptor", Descriptor: true}, nil}, // precheck's own refusal
		{"plain.raw", "raw", false, Lookalike{}, nil},
	} {
		err := CheckLooks(tc.name, tc.format, tc.forceRaw, tc.l)
		if len(tc.says) == 0 {
			if err != nil {
				t.Errorf("%s as %s (force-raw %v): %v", tc.name, tc.format, tc.forceRaw, err)
			}
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s as %s (force-raw %v): got %v, want InvalidArgument", tc.name, tc.format, tc.forceRaw, err)
			continue
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s as %s: %q does not say %q", tc.name, tc.format, err, s)
			}
		}
	}
}

// TestInspectFormatMismatch: Inspect refuses a real qcow2, VMDK and VHDX given as raw
// and a VMDK given as qcow2, naming what they look like, before qemu-img runs; a qcow2
// given as raw with ForceRaw is read as raw (its virtual size is the file's size); and
// ForceRaw with another format is refused.
func TestInspectFormatMismatch(t *testing.T) {
	d := kilntest.Disks(t)
	var tool Tool
	ctx := context.Background()
	for _, tc := range []struct{ file, format, says string }{
		{"good.qcow2", "raw", "--disk " + filepath.Join(d, "good.qcow2") + ",format=qcow2"},
		{"good.vmdk", "raw", ",format=vmdk"},
		{"good.vhdx", "raw", ",format=vhdx"},
		{"luks.qcow2", "raw", ",format=qcow2"},
		{"good.vmdk", "qcow2", ",format=vmdk"},
		{"good.qcow2", "vhdx", ",format=qcow2"},
	} {
		_, err := tool.Inspect(ctx, source(t, filepath.Join(d, tc.file), tc.format))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "given as "+tc.format) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s as %s: got %v; want InvalidArgument saying %q", tc.file, tc.format, err, tc.says)
		}
	}
	src := source(t, filepath.Join(d, "good.qcow2"), "raw")
	src.ForceRaw = true
	info, err := tool.Inspect(ctx, src)
	st, _ := src.File.Stat()
	if err != nil || info.VirtualSize != st.Size() {
		t.Errorf("good.qcow2 as raw, force-raw: %+v, %v; want it read as raw (virtual size %d)", info, err, st.Size())
	}
	src = source(t, filepath.Join(d, "good.qcow2"), "qcow2")
	src.ForceRaw = true
	if _, err := tool.Inspect(ctx, src); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "force-raw is for a disk given as raw") {
		t.Errorf("force-raw with qcow2: got %v", err)
	}
}

// FuzzSniff: any bytes give an answer without a panic, and a file that starts with a
// qcow2 magic is never said to be nothing.
func FuzzSniff(f *testing.F) {
	f.Add([]byte("QFI\xfb\x00\x00\x00\x03"))
	f.Add([]byte("conectix"))
	f.Add(bytes.Repeat([]byte{0}, 600))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Sniff(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.HasPrefix(b, []byte(sigQCOW)) && l.Format == "" {
			t.Errorf("%q: no format", b)
		}
	})
}
