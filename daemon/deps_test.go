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
// methods). internal/netstat, like internal/ids, is neutral ground: daemon/machines and
// daemon/imds both read the kernel's sockets with it, and imds reaches nothing else of kiln.
func TestImportRules(t *testing.T) {
	allowed := map[string][]string{ // kiln packages each may depend on
		"kiln/images":           {"kiln/internal/ids", "kiln/internal/filter"},
		"kiln/images/oci":       {"kiln/images", "kiln/internal/ids", "kiln/internal/filter"},
		"kiln/internal/ids":     {},
		"kiln/internal/filter":  {"kiln/internal/ids"},
		"kiln/internal/netstat": {},
		"kiln/daemon/imds":      {"kiln/internal/netstat"},
		"kiln/volumes":          {},
		"kiln/hypervisor":       {"kiln/hypervisor/qmp"},
		"kiln/hypervisor/qmp":   {},
		"kiln/systemd":          {},
		"kiln/daemon/api":       {},
		"kiln/daemon/client":    {"kiln/daemon/api"},
		"kiln/builder":          {"kiln/images", "kiln/internal/ids", "kiln/internal/filter", "kiln/volumes", "kiln/hypervisor", "kiln/hypervisor/qmp"},
		"kiln/cmd/kiln":         {"kiln/daemon/client", "kiln/daemon/api"},
	}
	// Outside modules allowed beside the standard library, for the strictest packages.
	outside := map[string][]string{
		"kiln/daemon/api":       {"github.com/containerd/errdefs"},
		"kiln/daemon/client":    {"github.com/containerd/errdefs"},                                                             // through daemon/api
		"kiln/hypervisor/qmp":   {"github.com/digitalocean/go-qemu", "github.com/digitalocean/go-libvirt", "golang.org/x/sys"}, // go-qemu/qmp needs go-libvirt,
		"kiln/internal/netstat": {"github.com/containerd/errdefs"},
		"kiln/daemon/imds":      {"github.com/containerd/errdefs", "github.com/containerd/log", "github.com/sirupsen/logrus", "golang.org/x/sys"}, // logrus, through containerd/log, needs x/sys
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
	checkDaemonParts(t)
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

// daemonParts are the daemon's own packages and the daemon packages each may import
// directly (docs/decisions.md, "The daemon's rooms"): the small ones are leaves, the
// domain packages build on them, and none imports the root (composition and handlers).
var daemonParts = map[string][]string{
	"kiln/daemon/api":        {},
	"kiln/daemon/client":     {"kiln/daemon/api"},
	"kiln/daemon/quota":      {},
	"kiln/daemon/console":    {},
	"kiln/daemon/settings":   {"kiln/daemon/quota"},
	"kiln/daemon/peer":       {"kiln/daemon/settings"},
	"kiln/daemon/audit":      {"kiln/daemon/peer"},
	"kiln/daemon/machines":   {"kiln/daemon/api", "kiln/daemon/record"},
	"kiln/daemon/vols":       {"kiln/daemon/api", "kiln/daemon/quota", "kiln/daemon/record"},
	"kiln/daemon/imaging":    {"kiln/daemon/api", "kiln/daemon/peer", "kiln/daemon/quota"},
	"kiln/daemon/keys":       {"kiln/daemon/api", "kiln/daemon/record"},
	"kiln/daemon/recyclebin": {"kiln/daemon/api"},
	"kiln/daemon/imds":       {},
	"kiln/daemon/ec2":        {"kiln/daemon/api", "kiln/daemon/client", "kiln/daemon/peer", "kiln/daemon/record"},
	"kiln/daemon/instances":  {"kiln/daemon/api", "kiln/daemon/console", "kiln/daemon/machines", "kiln/daemon/quota", "kiln/daemon/record", "kiln/daemon/vols"},
	"kiln/daemon/record":     {"kiln/daemon/api", "kiln/daemon/events"},
	"kiln/daemon/events":     {"kiln/daemon/api"},
}

// checkDaemonParts holds each of the daemon's packages to its direct imports of the
// others, and fails on a package of the daemon the table does not name.
func checkDaemonParts(t *testing.T) {
	out, err := kilntest.Command(t, "go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "kiln/daemon/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := f[0]
		if pkg == "kiln/daemon" {
			continue
		}
		allowed, ok := daemonParts[pkg]
		if !ok {
			t.Errorf("%s is a package of the daemon that daemonParts does not name: say what it may import", pkg)
			continue
		}
		for _, d := range f[1:] {
			if strings.HasPrefix(d, "kiln/daemon") && !contains(allowed, d) {
				t.Errorf("%s imports %s; the daemon's parts import only %v", pkg, d, allowed)
			}
		}
	}
}
