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
// reaches the daemon only through daemon/client and daemon/api, and daemon/api holds
// to the standard library and errdefs.
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
	out, err := kilntest.Command(t, "go", "list", "-deps", "-json=ImportPath,Standard,Deps", "kiln/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Standard   bool
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
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
