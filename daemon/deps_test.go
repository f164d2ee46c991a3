package daemon_test

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// TestImportRules keeps ARCHITECTURE.md's import rules true (as Tailscale's deptest
// does): leaves import no other kiln package, builder never imports daemon, the CLI
// reaches the daemon only through daemon/client and daemon/api, daemon/api holds to the
// standard library and errdefs, and only hypervisor speaks QMP: no other package, nor
// its tests, imports go-qemu or kiln/hypervisor/qmp (they use hypervisor.Machine's
// methods).
func TestImportRules(t *testing.T) {
	allowed := map[string][]string{ // kiln packages each may depend on
		"kiln/images":         {},
		"kiln/volumes":        {},
		"kiln/hypervisor":     {"kiln/hypervisor/qmp"},
		"kiln/hypervisor/qmp": {},
		"kiln/systemd":        {},
		"kiln/daemon/api":     {},
		"kiln/daemon/client":  {"kiln/daemon/api"},
		"kiln/builder":        {"kiln/images", "kiln/volumes", "kiln/hypervisor", "kiln/hypervisor/qmp"},
		"kiln/cmd/kiln":       {"kiln/daemon/client", "kiln/daemon/api"},
	}
	// Outside modules allowed beside the standard library, for the strictest packages.
	outside := map[string][]string{
		"kiln/daemon/api":     {"github.com/containerd/errdefs"},
		"kiln/daemon/client":  {"github.com/containerd/errdefs"},                                                             // through daemon/api
		"kiln/hypervisor/qmp": {"github.com/digitalocean/go-qemu", "github.com/digitalocean/go-libvirt", "golang.org/x/sys"}, // go-qemu/qmp needs go-libvirt,
	}
	// QMP, for direct imports (of a package or its tests): only hypervisor and its
	// own subpackage hold these.
	qmpOnly := []string{"kiln/hypervisor/qmp", "github.com/digitalocean/go-qemu", "github.com/digitalocean/go-libvirt"}
	qmpSpeakers := []string{"kiln/hypervisor", "kiln/hypervisor/qmp"}
	out, err := kilntest.Command(t, "go", "list", "-deps", "-json=ImportPath,Standard,Deps,Imports,TestImports,XTestImports", "kiln/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath                         string
			Standard                           bool
			Deps                               []string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if isKiln := p.ImportPath == "kiln" || strings.HasPrefix(p.ImportPath, "kiln/"); isKiln && !contains(qmpSpeakers, p.ImportPath) {
			seen++
			for kind, imports := range map[string][]string{"": p.Imports, " (tests)": p.TestImports, " (external tests)": p.XTestImports} {
				for _, d := range imports {
					if hasPrefixIn(d, qmpOnly) {
						t.Errorf("%s%s imports %s: only kiln/hypervisor speaks QMP; use hypervisor.Machine's methods", p.ImportPath, kind, d)
					}
				}
			}
		}
		rules, ok := allowed[p.ImportPath]
		ext, strict := outside[p.ImportPath]
		for _, d := range p.Deps {
			isKiln := d == "kiln" || strings.HasPrefix(d, "kiln/")
			switch {
			case isKiln && ok && !contains(rules, d):
				t.Errorf("%s imports %s", p.ImportPath, d)
			case isKiln && strings.HasPrefix(d, "kiln/cmd/"):
				t.Errorf("%s imports the command %s", p.ImportPath, d)
			case isKiln && d == "kiln/daemon" && p.ImportPath != "kiln/cmd/kilnd":
				t.Errorf("%s imports kiln/daemon", p.ImportPath)
			case strict && !isKiln && strings.Contains(strings.Split(d, "/")[0], ".") && !hasPrefixIn(d, ext):
				t.Errorf("%s depends on %s", p.ImportPath, d)
			}
		}
	}
	if seen < len(allowed)-2 { // the QMP rule looked at the packages above (but hypervisor's)
		t.Errorf("go list named %d kiln packages besides hypervisor's; want at least %d", seen, len(allowed)-2)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasPrefixIn(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if s == p || strings.HasPrefix(s, p+"/") {
			return true
		}
	}
	return false
}
