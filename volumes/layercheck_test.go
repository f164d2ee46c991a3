package volumes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestCheckLayer: a layer from outside is held to a registered disk's checks, but may
// sit on a layer below it named by its bare digest: a bottom layer and a layer on a
// listed parent pass (with their virtual size and the parent named); a layer naming a
// host file, or a layer that is not listed below it, or keeping its data in another
// file, or not qcow2 at all, or truncated, is refused, and qemu-img never opens what
// the header names (the parent need not exist).
func TestCheckLayer(t *testing.T) {
	need(t, "qemu-img")
	dir := t.TempDir()
	parent := strings.Repeat("ab", 32)
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "bottom.qcow2", "32M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", parent, "top.qcow2", "32M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "/etc/passwd", "host.qcow2", "32M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "data"), "datafile.qcow2", "32M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "raw.img", "32M")
	var tool Tool
	for _, tc := range []struct {
		file       string
		parents    []string
		want       string // a piece of the error, or "" to pass
		wantParent string
	}{
		{file: "bottom.qcow2"},
		{file: "top.qcow2", parents: []string{"00", parent}, wantParent: parent},
		{file: "top.qcow2", parents: nil, want: "not a layer below it"},
		{file: "host.qcow2", parents: []string{parent}, want: `names backing file "/etc/passwd"`},
		{file: "datafile.qcow2", want: "external file"},
		{file: "raw.img", want: "not a qcow2 file"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			info, got, err := tool.CheckLayer(context.Background(), f, tc.file, tc.parents)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && (got != tc.wantParent || info.VirtualSize <= 0):
				t.Errorf("parent %q, virtual size %d; want parent %q", got, info.VirtualSize, tc.wantParent)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errdefs.IsInvalidArgument(err)):
				t.Errorf("error %v; want InvalidArgument saying %q", err, tc.want)
			}
		})
	}
}
