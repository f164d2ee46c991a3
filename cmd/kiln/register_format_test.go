package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// TestRegisterFormatMismatch: a real qcow2 file registered as raw through kiln and a
// real kilnd is refused (exit 1, InvalidParameterValue naming qcow2 and the flag that
// fixes it) and leaves nothing behind: no image record, no blob, no ingest. A genuine
// raw file is accepted as raw, and so is the qcow2 file with force-raw; force-raw
// without format=raw is a usage error.
func TestRegisterFormatMismatch(t *testing.T) {
	d := kilntest.Disks(t)
	k := startKilnd(t)
	qcow2 := filepath.Join(d, "good.qcow2")

	code, out, errOut := kiln(t, k.Socket, "image", "register", "mismatch", "--wait", "--disk", qcow2+",format=raw")
	if code != 1 || out != "" {
		t.Errorf("qcow2 as raw: exit %d, stdout %q; want 1 and nothing", code, out)
	}
	for _, s := range []string{"InvalidParameterValue", "given as raw but holds a qcow2 header", "--disk " + qcow2 + ",format=qcow2", "force-raw"} {
		if !strings.Contains(errOut, s) {
			t.Errorf("qcow2 as raw: stderr does not say %q:\n%s", s, errOut)
		}
	}
	code, out, _ = kiln(t, k.Socket, "image", "ls", "-q")
	if code != 0 || out != "" {
		t.Errorf("images after the refusal: exit %d, %q; want none", code, out)
	}
	for _, dir := range []string{"content/ingest", "content/blobs/sha256"} {
		ents, err := os.ReadDir(filepath.Join(k.Root, dir))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s holds %d entries after the refusal (%s); want none", dir, len(ents), ents[0].Name())
		}
	}

	code, out, errOut = kiln(t, k.Socket, "image", "register", "plain", "--wait", "-q", "--disk", filepath.Join(d, "random.raw")+",format=raw")
	if code != 0 || !strings.HasPrefix(out, "ami-") {
		t.Errorf("a raw file as raw: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = kiln(t, k.Socket, "image", "register", "forced", "--wait", "-o", "json", "--disk", qcow2+",format=raw,force-raw")
	if code != 0 || !strings.Contains(out, `"state": "available"`) {
		t.Errorf("qcow2 as raw with force-raw: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if errOut != "" { // stderr is no terminal here: no progress bar
		t.Errorf("register --wait with stderr not a terminal wrote to it: %q", errOut)
	}
	code, _, errOut = kiln(t, k.Socket, "image", "register", "usage", "--disk", qcow2+",force-raw")
	if code != 2 || !strings.Contains(errOut, "add format=raw") {
		t.Errorf("force-raw without format=raw: exit %d, stderr %q; want a usage error (2)", code, errOut)
	}
}
