package volumes

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/internal/kilntest"
)

func TestOpenChain(t *testing.T) {
	need(t, "qemu-img")
	dir := t.TempDir()
	ctx := context.Background()
	var tool Tool
	path := func(name string) string { return filepath.Join(dir, name) }
	if err := tool.CreateBlank(ctx, path("base"), 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct{ file, backing string }{
		{"mid", "base"},                       // relative, as a layer names its parent
		{"top", path("mid")},                  // absolute
		{"stray", "elsewhere"},                // names another file
		{"above-frozen", "vol.frozen-1.qcow"}, // names a frozen file a layer stands in for
	} {
		if err := tool.CreateOverlayNamed(ctx, path(o.file), o.backing, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	open := func(readOnly bool, chain ...ChainFile) error {
		files, err := OpenChain(chain, readOnly)
		for _, f := range files {
			f.Close()
		}
		return err
	}
	good := []ChainFile{{Path: path("base")}, {Path: path("mid")}, {Path: path("top")}}
	files, err := OpenChain(good, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		flags := kilntest.OpenFlags(t, 0, int(f.Fd()))
		if rw := flags&os.O_RDWR != 0; rw != (i == 2) {
			t.Errorf("file %d opened with flags %#o", i, flags)
		}
		f.Close()
	}
	if err := open(true, good...); err != nil {
		t.Error(err)
	}
	if err := open(false, ChainFile{Path: path("base"), Aliases: []string{path("vol.frozen-1.qcow")}}, ChainFile{Path: path("above-frozen")}); err != nil {
		t.Errorf("a name of the file below's alias: %v", err)
	}

	// The data-file bit, set behind kiln's back.
	tampered := path("tampered")
	b, _ := os.ReadFile(path("base"))
	binary.BigEndian.PutUint64(b[72:], binary.BigEndian.Uint64(b[72:])|1<<2)
	os.WriteFile(tampered, b, 0o600)
	for _, c := range []struct {
		chain []ChainFile
		want  string
	}{
		{[]ChainFile{{Path: path("mid")}}, "bottom of its chain but its header names a backing file"},
		{[]ChainFile{{Path: path("base")}, {Path: path("stray")}}, `names backing file "elsewhere", not the file below it (base)`},
		{[]ChainFile{{Path: path("mid")}, {Path: path("top")}}, "bottom of its chain"},
		{[]ChainFile{{Path: path("base")}, {Path: path("top")}}, "not the file below it"},
		{[]ChainFile{{Path: tampered}}, "external data file"},
		{[]ChainFile{{Path: path("missing")}}, "no such file"},
	} {
		err := open(false, c.chain...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.chain, err, c.want)
		} else if c.want != "no such file" && !errdefs.IsDataLoss(err) {
			t.Errorf("%v: %v is not data loss", c.chain, err)
		}
	}
}

// TestToolsReadCheckedHeaders: the tools kilnd runs as root over files a QEMU wrote
// (Flatten at a capture, Rename at a start) refuse a header that names an external data
// file, which qemu-img would open by name; CopyChecked copies a clean file exactly.
func TestToolsReadCheckedHeaders(t *testing.T) {
	need(t, "qemu-img")
	dir := t.TempDir()
	ctx := context.Background()
	var tool Tool
	base, top := filepath.Join(dir, "base"), filepath.Join(dir, "top")
	if err := tool.CreateBlank(ctx, base, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := tool.CreateOverlay(ctx, top, base, 1<<20); err != nil {
		t.Fatal(err)
	}
	var copied bytes.Buffer
	if err := CopyChecked(&copied, top); err != nil {
		t.Fatal(err)
	}
	if want, _ := os.ReadFile(top); !bytes.Equal(copied.Bytes(), want) {
		t.Errorf("CopyChecked copied %d bytes, not the file's %d", copied.Len(), len(want))
	}
	if err := tool.Flatten(ctx, []string{base}, []string{top}, filepath.Join(dir, "flat")); err != nil {
		t.Fatalf("flatten: %v", err)
	}

	b, _ := os.ReadFile(top) // a top whose header a hijacked QEMU set to name a data file
	binary.BigEndian.PutUint64(b[72:], binary.BigEndian.Uint64(b[72:])|1<<2)
	os.WriteFile(top, b, 0o600)
	if err := CopyChecked(io.Discard, top); err == nil || !strings.Contains(err.Error(), "external file") {
		t.Errorf("CopyChecked of a data-file header: %v", err)
	}
	if err := tool.Flatten(ctx, []string{base}, []string{top}, filepath.Join(dir, "flat2")); err == nil || !strings.Contains(err.Error(), "external file") {
		t.Errorf("Flatten over a data-file header: %v", err)
	}
	if err := tool.Rename(ctx, top, base); err == nil || !strings.Contains(err.Error(), "external file") {
		t.Errorf("Rename of a data-file header: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".flatten-*")); len(left) > 0 {
		t.Errorf("Flatten left %v", left)
	}
}
