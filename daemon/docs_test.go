package daemon_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// TestEveryPackageHasDocGo: every package of the module, those under testdata/ too,
// has a doc.go whose package comment introduces it ("Package x …", or "Command x …"
// for a command), and no other file of it has a package comment (go doc would join
// them). STYLE.md asks each doc.go to say what the package owns.
func TestEveryPackageHasDocGo(t *testing.T) {
	out, err := kilntest.Command(t, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	root := strings.TrimSpace(string(out))

	// The module's directories holding Go files: `go list kiln/...` leaves out
	// testdata/, which holds packages too.
	var dirs []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == root {
				return nil
			}
			if name := d.Name(); strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil { // another module
				return filepath.SkipDir
			}
			return nil
		}
		if dir := "./" + filepath.ToSlash(mustRel(t, root, filepath.Dir(path))); strings.HasSuffix(path, ".go") && !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := kilntest.Command(t, append([]string{"go", "list", "-e", "-json=Dir,ImportPath,Name,GoFiles,Error"}, dirs...)...)
	cmd.Dir = root
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			Dir, ImportPath, Name string
			GoFiles               []string
			Error                 *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
			continue
		}
		if !slices.Contains(p.GoFiles, "doc.go") {
			t.Errorf("%s has no doc.go", p.ImportPath)
		}
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			want = "Command " + filepath.Base(p.Dir) + " "
		}
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Errorf("%s: %v", p.ImportPath, err)
				continue
			}
			switch doc := f.Doc.Text(); {
			case name != "doc.go" && doc != "":
				t.Errorf("%s: %s has a package comment; it belongs in doc.go", p.ImportPath, name)
			case name == "doc.go" && !strings.HasPrefix(doc, want):
				t.Errorf("%s: doc.go's package comment should begin %q; it is %q", p.ImportPath, want, doc)
			}
		}
	}
	if seen < len(dirs) || seen < 10 {
		t.Errorf("go list described %d packages of %d directories with Go files", seen, len(dirs))
	}
}

func mustRel(t *testing.T, base, target string) string {
	t.Helper()
	rel, err := filepath.Rel(base, target)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}
