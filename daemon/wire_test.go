package daemon_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyAPIBuildsWireErrors: the daemon's packages return errors of errdefs' classes
// (with typed details where a client needs them, as a quota error's limit and use), and
// only daemon/api turns them into the API's codes and messages (api.FromError). No
// other package's code makes an api.Error; daemon/client only decodes them.
func TestOnlyAPIBuildsWireErrors(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case d.IsDir() && (strings.HasPrefix(d.Name(), ".") || rel == filepath.Join("daemon", "api") || rel == filepath.Join("daemon", "client")):
			return filepath.SkipDir
		case d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go"):
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "api.Error{") {
			t.Errorf("%s builds an api.Error: return an error of an errdefs class and let daemon/api map it", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
