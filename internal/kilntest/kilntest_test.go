package kilntest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileTail: the last lines of a console whose head kilnd dropped (a 1 GiB hole), read
// from its end, \r and NULs removed; an empty or missing file says so.
func TestFileTail(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "console.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("one\r\ntwo\r\nthree\r\n"), 1<<30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := FileTail(p, 2); got != "[… 2 lines before]\ntwo\nthree" {
		t.Errorf("FileTail = %q", got)
	}
	if got := FileTail(p, 5); !strings.HasPrefix(got, "[… the first ") || !strings.HasSuffix(got, "\none\ntwo\nthree") {
		t.Errorf("FileTail = %q", got)
	}
	os.WriteFile(filepath.Join(d, "empty"), nil, 0o600)
	if got := FileTail(filepath.Join(d, "empty"), 5); got != "(empty)" {
		t.Errorf("FileTail of an empty file = %q", got)
	}
	if got := FileTail(filepath.Join(d, "none"), 5); !strings.Contains(got, "no such file") {
		t.Errorf("FileTail of no file = %q", got)
	}
}
