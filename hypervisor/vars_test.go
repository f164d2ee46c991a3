package hypervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// TestWriteVars: a machine's variable store is made only of an OVMF store (either of
// the installed templates, or a copy with variables in it), mode 0600; a file of the
// right size that is not one (zeros, the code's first bytes), a short one and one
// past the bound are refused, and leave nothing behind.
func TestWriteVars(t *testing.T) {
	if err := FirmwareAvailable(true); err != nil {
		kilntest.Missing(t, "OVMF (make deps installs ovmf): %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, VarsFile)
	for _, tmpl := range []string{VarsTemplate(false), VarsTemplate(true)} {
		b, err := os.ReadFile(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteVars(path, bytes.NewReader(b)); err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 || st.Size() != int64(len(b)) {
			t.Fatalf("%s: the store is %v, %v; want %d bytes, mode 0600", tmpl, st, err, len(b))
		}
		os.Remove(path)
	}
	tmpl, _ := os.ReadFile(VarsTemplate(false))
	code, _ := os.ReadFile(filepath.Join(OVMFDir, OVMFCode))
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"zeros", make([]byte, len(tmpl)), "not an OVMF variable store"},
		{"code", code[:len(tmpl)], "not an OVMF variable store"},
		{"header only", tmpl[:0x1000], "bytes; OVMF's is"},
		{"too big", make([]byte, MaxVarsSize+10), "bytes; OVMF's is"},
	} {
		err := WriteVars(path, bytes.NewReader(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error with %q", c.name, err, c.want)
		}
		if names, _ := os.ReadDir(dir); len(names) != 0 {
			t.Errorf("%s: left %v", c.name, names)
		}
	}
}

// TestHasPlatformKey: OVMF's template without keys has no PK; the Microsoft-keyed one
// and the snakeoil one have one; zeros are no store at all.
func TestHasPlatformKey(t *testing.T) {
	for f, want := range map[string]bool{"OVMF_VARS_4M.fd": false, "OVMF_VARS_4M.ms.fd": true, "OVMF_VARS_4M.snakeoil.fd": true} {
		fh, err := os.Open(filepath.Join(OVMFDir, f))
		if err != nil {
			kilntest.Missing(t, "OVMF (make deps installs ovmf): %v", err)
			continue
		}
		st, _ := fh.Stat()
		if got := HasPlatformKey(fh, st.Size()); got != want {
			t.Errorf("%s: platform key %v; want %v", f, got, want)
		}
		fh.Close()
	}
	zeros := bytes.NewReader(make([]byte, 540672))
	if HasPlatformKey(zeros, int64(zeros.Len())) {
		t.Error("zeros have a platform key")
	}
}
