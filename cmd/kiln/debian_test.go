package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// TestDebianGuest: a real distribution image, taken as a downloaded cloud image is: it
// registers with --disk alone (a partitioned disk that its own bootloader boots), and an
// instance of it boots to cloud-init's end having read the instance's NoCloud seed: its
// user data ran, and its meta-data gave the instance's id.
func TestDebianGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the Debian guest")
	}
	disk := kilntest.DebianDisk(t)
	socket := startDaemon(t)
	if code, _, errOut := kiln(t, socket, "image", "register", "debian-12", "--disk", disk, "--wait", "-q"); code != 0 {
		t.Fatalf("register: exit %d: %s", code, errOut)
	}
	ud := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(ud, []byte("#cloud-config\nruncmd:\n  - echo KILN-DEBIAN-RUNCMD $(cat /var/lib/cloud/data/instance-id) > /dev/console\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := kilnWithin(t, kilntest.DebianDeadline, socket, "run", "debian-12", "--name", "deb", "--type", "small",
		"--user-data", ud, "--wait", "--timeout", kilntest.DebianDeadline.String(), "-q")
	id := strings.TrimSpace(out)
	if strings.HasPrefix(id, "i-") {
		t.Cleanup(func() { kiln(t, socket, "terminate", "--force", id) })
	}
	if code != 0 || !strings.HasPrefix(id, "i-") {
		t.Fatalf("run --wait: exit %d, %q, %q\n%s", code, out, errOut, kilntest.InstancesEvidence(filepath.Join(filepath.Dir(socket), "root")))
	}
	_, console, _ := kiln(t, socket, "console", "deb")
	for _, want := range []string{"KILN-DEBIAN-RUNCMD " + id, "Datasource DataSourceNoCloud"} {
		if !strings.Contains(console, want) {
			t.Errorf("the console lacks %q:\n%s", want, kilntest.Tail(console, 40))
		}
	}
}
