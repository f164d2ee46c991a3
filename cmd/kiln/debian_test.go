package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestDebianGuest: a real distribution image, taken as a downloaded cloud image is: it
// registers with --disk alone (a partitioned disk that its own bootloader boots), and an
// instance of it boots to cloud-init's end having read the instance's NoCloud seed: its
// user data ran, and its meta-data gave the instance's id. Its network works both ways:
// a web server the user data starts answers on the published loopback port, and the
// guest's sshd on the instance's SSH port; a port another instance publishes or another
// process holds is refused, naming who has it.
func TestDebianGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the Debian guest")
	}
	disk := kilntest.DebianDisk(t)
	sshBin := kilntest.Need(t, "ssh")
	socket := startDaemon(t)
	home := t.TempDir()
	t.Setenv("HOME", home) // key-pair create keeps the private key in ~/.ssh/kiln/
	if code, _, errOut := kiln(t, socket, "key-pair", "create", "k", "-q"); code != 0 {
		t.Fatalf("key-pair create: exit %d: %s", code, errOut)
	}
	keyFile := filepath.Join(home, ".ssh", "kiln", "k")
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the private key: %v, %v; want a file of mode 0600", st, err)
	}
	if code, _, errOut := kiln(t, socket, "image", "register", "debian-12", "--disk", disk, "--wait", "-q"); code != 0 {
		t.Fatalf("register: exit %d: %s", code, errOut)
	}
	ud := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(ud, []byte(`#cloud-config
runcmd:
  - echo KILN-DEBIAN-RUNCMD $(cat /var/lib/cloud/data/instance-id) > /dev/console
  - systemd-run --unit kiln-web python3 -m http.server 8080 --directory /var/lib/cloud/data
`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := kilnWithin(t, kilntest.DebianDeadline, socket, "run", "debian-12", "--name", "deb", "--type", "small",
		"--user-data", ud, "--publish", "18080:8080", "--key-name", "k", "--wait", "--timeout", kilntest.DebianDeadline.String(), "-q")
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

	// The published port: the web server serves the instance's id from cloud-init's data.
	var body string
	kilntest.Poll(t, time.Minute, "the web server on 127.0.0.1:18080", func() bool {
		resp, err := http.Get("http://127.0.0.1:18080/instance-id")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusOK
	}, func() string { return kilntest.Tail(console, 20) })
	if body != id {
		t.Errorf("GET /instance-id through the published port: %q, want %q", body, id)
	}
	// The SSH port: the guest's sshd answers with its banner.
	_, out, _ = kiln(t, socket, "instance", "inspect", "deb", "-o", "json")
	var inst api.Instance
	if err := json.Unmarshal([]byte(out), &inst); err != nil || inst.SSHPort == 0 || len(inst.Ports) != 2 || inst.KeyName != "k" {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", inst.SSHPort), 10*time.Second)
	if err != nil {
		t.Fatalf("the SSH port %d: %v", inst.SSHPort, err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	banner, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(banner, "SSH-2.0-OpenSSH") {
		t.Errorf("the SSH port %d answered %q, want sshd's banner", inst.SSHPort, banner)
	}
	// The key pair: its private key logs in as the image's default user, the host key
	// checked (a known_hosts of the test's own, the key accepted on first sight).
	ssh := kilntest.CommandWithin(t, time.Minute, sshBin, "-i", keyFile, "-p", fmt.Sprint(inst.SSHPort),
		"-o", "UserKnownHostsFile="+filepath.Join(home, "known_hosts"), "-o", "StrictHostKeyChecking=accept-new",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "debian@127.0.0.1", "cat", "/var/lib/cloud/data/instance-id")
	if got, err := ssh.Output(); err != nil || strings.TrimSpace(string(got)) != id {
		t.Errorf("ssh with the key pair: %v: %q; want %s", err, got, id)
	}
	if _, out, _ = kiln(t, socket, "ps"); !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d->22/tcp, 127.0.0.1:18080->8080/tcp", inst.SSHPort)) {
		t.Errorf("ps does not show the ports:\n%s", out)
	}

	// Taken ports are refused before any QEMU starts, naming who has them.
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct{ publish, says string }{
		{"18080:80", "published by instance " + id},
		{fmt.Sprintf("%d:80", heldPort), fmt.Sprintf("taken by %s (pid %d)", filepath.Base(os.Args[0])[:min(15, len(filepath.Base(os.Args[0])))], os.Getpid())},
		{"80:80", "1024 to 65535"},
		{"42300:22", "kept for instances' SSH"},
	} {
		code, _, errOut := kiln(t, socket, "run", "debian-12", "--type", "nano", "--publish", tc.publish)
		if code != 1 || !strings.Contains(errOut, tc.says) || !strings.Contains(errOut, api.CodeInvalidParameterValue) {
			t.Errorf("run --publish %s: exit %d, %q; want 1 and InvalidParameterValue saying %q", tc.publish, code, errOut, tc.says)
		}
	}
	if _, out, _ = kiln(t, socket, "ps", "-q"); strings.TrimSpace(out) != id {
		t.Errorf("refused launches left instances: %q", out)
	}
}
