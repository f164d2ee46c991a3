package volumes

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
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
		flags, _ := fileFlags(f)
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

func fileFlags(f *os.File) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(n), err
		}
	}
	return 0, nil
}
