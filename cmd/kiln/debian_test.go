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
	"sync/atomic"
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
	kilntest.Need(t, "ssh")
	kilntest.Need(t, "scp")
	k := startKilnd(t)
	socket := k.Socket
	home := t.TempDir()
	t.Setenv("HOME", home) // key-pair create keeps the private key in ~/.ssh/kiln/
	if code, _, errOut := kiln(t, socket, "key-pair", "create", "k", "-q"); code != 0 {
		t.Fatalf("key-pair create: exit %d: %s", code, errOut)
	}
	if st, err := os.Stat(filepath.Join(home, ".ssh", "kiln", "k")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the private key: %v, %v; want a file of mode 0600", st, err)
	}
	if code, _, errOut := kiln(t, socket, "image", "register", "debian-12", "--disk", disk, "--wait", "-q"); code != 0 {
		t.Fatalf("register: exit %d: %s", code, errOut)
	}
	ud := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(ud, []byte(userData), 0o644); err != nil {
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
	if _, out, _ = kiln(t, socket, "ps"); !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d->22/tcp, 127.0.0.1:18080->8080/tcp", inst.SSHPort)) {
		t.Errorf("ps does not show the ports:\n%s", out)
	}

	// Taken ports are refused before any QEMU starts, naming who has them.
	// A port of another process's, outside the range kept for SSH (the kernel's
	// ephemeral ports overlap it).
	var held net.Listener
	for held == nil || held.Addr().(*net.TCPAddr).Port >= 42200 && held.Addr().(*net.TCPAddr).Port <= 43199 {
		if held != nil {
			defer held.Close() // kept open until the end, so the kernel gives another
		}
		if held, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
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

	checkSSH(t, socket, id, home)
	checkExec(t, socket)
	checkMetadata(t, socket, id)
	checkOutbound(t, socket)

	// A kilnd killed and started again keeps the instance, its port and its key:
	// kiln ssh still logs in.
	k.Kill()
	k.Start()
	if _, out, _ := kiln(t, socket, "ssh", "deb", "--", "cat", "/var/lib/cloud/data/instance-id"); strings.TrimSpace(out) != id {
		t.Errorf("kiln ssh after kilnd was killed and started again: %q, want %s", out, id)
	}
	// Stop asks the guest's agent to shut down (the guest is off well before the force-off);
	// start boots it again with the same ports, and kiln ssh logs in.
	if code, _, errOut := kiln(t, socket, "stop", "deb", "--wait", "-q"); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, errOut)
	}
	if !strings.Contains(k.Log.String(), `how="guest agent"`) || strings.Contains(k.Log.String(), "forcing it off") {
		t.Errorf("stop did not go through the guest agent, or the guest was forced off:\n%s", kilntest.Tail(k.Log.String(), 10))
	}
	code, _, errOut = kilnWithin(t, kilntest.DebianDeadline, socket, "start", "deb", "--wait", "--timeout", kilntest.DebianDeadline.String(), "-q")
	if code != 0 {
		t.Fatalf("start --wait: exit %d: %s", code, errOut)
	}
	_, out, _ = kiln(t, socket, "instance", "inspect", "deb", "-o", "json")
	var again api.Instance
	if err := json.Unmarshal([]byte(out), &again); err != nil || again.SSHPort != inst.SSHPort || len(again.Ports) != 2 || again.Ports[1] != inst.Ports[1] {
		t.Errorf("after stop and start: %v, ports %+v; want %+v", err, again.Ports, inst.Ports)
	}
	if _, out, _ := kiln(t, socket, "ssh", "deb", "--", "cat", "/var/lib/cloud/data/instance-id"); strings.TrimSpace(out) != id {
		t.Errorf("kiln ssh after stop and start: %q, want %s", out, id)
	}
}

// userData is the Debian guest's cloud-config: a line on the console with the
// instance's id, a web server of cloud-init's data on port 8080.
const userData = `#cloud-config
runcmd:
  - echo KILN-DEBIAN-RUNCMD $(cat /var/lib/cloud/data/instance-id) > /dev/console
  - systemd-run --unit kiln-web python3 -m http.server 8080 --directory /var/lib/cloud/data
`

// checkSSH: kiln ssh logs in as the image's default user (the one cloud-init named)
// with the key pair's key, checking the guest's host key against the one its console
// showed, and refuses a guest whose key is another; kiln cp copies both ways.
func checkSSH(t *testing.T, socket, id, home string) {
	code, out, errOut := kiln(t, socket, "ssh", "deb", "--", "cat", "/var/lib/cloud/data/instance-id")
	if code != 0 || strings.TrimSpace(out) != id {
		t.Fatalf("kiln ssh deb -- cat …/instance-id: exit %d, %q, %q; want %s", code, out, errOut, id)
	}
	code, out, _ = kiln(t, socket, "ssh", "deb", "--", "sh", "-c", "'whoami; exit 3'")
	if code != 3 || strings.TrimSpace(out) != "debian" {
		t.Errorf("kiln ssh deb -- sh -c 'whoami; exit 3': exit %d, %q; want 3 and debian", code, out)
	}
	known, err := os.ReadFile(filepath.Join(home, ".ssh", "kiln", "known_hosts.d", id))
	if err != nil || !strings.HasPrefix(string(known), id+" ssh-ed25519 ") {
		t.Errorf("~/.ssh/kiln/known_hosts.d/%s: %v, %q; want the guest's key under its id", id, err, known)
	}

	// A guest that answers with another host key than its console showed is refused.
	kept := filepath.Join(filepath.Dir(socket), "root", "instances", id, "guest.json")
	orig, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	other := `{"sshHostKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+DOHmax7E7jOXLo3v32TScc1KVOqhrDAN2aH+dLcLv"],"sshUser":"debian"}`
	if err := os.WriteFile(kept, []byte(other), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = kiln(t, socket, "ssh", "deb", "--", "true")
	if code != 255 || !strings.Contains(errOut, "Host key verification failed") {
		t.Errorf("kiln ssh to a guest whose host key is not the one recorded: exit %d, %q, %q; want 255 and a refusal", code, out, errOut)
	}
	if err := os.WriteFile(kept, orig, 0o600); err != nil {
		t.Fatal(err)
	}

	// kiln cp: a file to the guest and back.
	local := filepath.Join(t.TempDir(), "sent")
	want := "kiln cp " + id + "\n"
	if err := os.WriteFile(local, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := kiln(t, socket, "cp", local, "deb:/tmp/sent"); code != 0 {
		t.Fatalf("kiln cp to the guest: exit %d: %s", code, errOut)
	}
	back := filepath.Join(t.TempDir(), "back")
	if code, _, errOut := kiln(t, socket, "cp", "deb:/tmp/sent", back); code != 0 {
		t.Fatalf("kiln cp from the guest: exit %d: %s", code, errOut)
	}
	if got, err := os.ReadFile(back); err != nil || string(got) != want {
		t.Errorf("a file copied there and back: %q, %v; want %q", got, err, want)
	}
}

// checkExec: kiln exec runs a program through the guest agent, with its output, its
// exit status and its input.
func checkExec(t *testing.T, socket string) {
	code, out, errOut := kiln(t, socket, "exec", "deb", "--", "sh", "-c", "id -un; echo oops >&2; exit 3")
	if code != 3 || out != "root\n" || errOut != "oops\n" {
		t.Errorf("kiln exec deb -- sh -c …: exit %d, %q, %q; want 3, root and oops", code, out, errOut)
	}
	code, _, errOut = kiln(t, socket, "exec", "deb", "--", "/no/such/program")
	if code != 1 || !strings.Contains(errOut, "/no/such/program") || !strings.Contains(errOut, api.CodeInvalidParameterValue) {
		t.Errorf("kiln exec of a missing program: exit %d, %q; want 1, InvalidParameterValue naming it", code, errOut)
	}
	code, _, errOut = kiln(t, socket, "exec", "--timeout", "1", "deb", "--", "sleep", "30")
	if code != 124 || !strings.Contains(errOut, "sleep still runs in the guest after 1 s") {
		t.Errorf("kiln exec --timeout 1 -- sleep 30: exit %d, %q; want 124, saying it still runs", code, errOut)
	}
	code, out, _ = kiln(t, socket, "exec", "-o", "json", "deb", "--", "uname", "-n")
	var res api.ExecResult
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || string(res.Stdout) != "deb\n" {
		t.Errorf("kiln exec -o json: exit %d, %v, %q; want the host name deb", code, err, out)
	}
}

// metadataScript, run in the guest, asks the metadata service for what kiln checks and
// prints the answers as JSON: [status, body] each.
const metadataScript = `
import json, sys, urllib.request as u
def get(path, token=None, method="GET", headers=None):
    h = dict(headers or {})
    if token:
        h["X-aws-ec2-metadata-token"] = token
    try:
        with u.urlopen(u.Request("http://169.254.169.254" + path, method=method, headers=h), timeout=20) as r:
            return [r.status, r.read().decode()]
    except u.HTTPError as e:
        return [e.code, ""]
tok = get("/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "5"})
print(json.dumps({
    "id": get("/latest/meta-data/instance-id"),
    "ami": get("/latest/meta-data/ami-id"),
    "ip": get("/latest/meta-data/local-ipv4"),
    "key": get("/latest/meta-data/public-keys/0/openssh-key"),
    "userData": get("/latest/user-data"),
    "token": tok,
    "withToken": get("/latest/meta-data/instance-id", token=tok[1]),
    "badToken": get("/latest/meta-data/instance-id", token="AQAEAnotatoken"),
    "forwarded": get("/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "5", "X-Forwarded-For": "1.2.3.4"}),
}))
`

// checkMetadata: from inside, the metadata service answers with this instance's id,
// image, address, key and user data; IMDSv2 tokens work and expire.
func checkMetadata(t *testing.T, socket, id string) {
	code, out, errOut := kiln(t, socket, "exec", "deb", "--", "python3", "-c", metadataScript)
	var got map[string][2]any
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
		t.Fatalf("the metadata script: exit %d, %v, %q, %q", code, err, out, errOut)
	}
	_, kp, _ := kiln(t, socket, "key-pair", "inspect", "k", "-o", "json")
	var key api.KeyPair
	json.Unmarshal([]byte(kp), &key)
	_, im, _ := kiln(t, socket, "instance", "inspect", "deb", "-o", "json")
	var inst api.Instance
	json.Unmarshal([]byte(im), &inst)
	ok := func(name, want string) {
		if g := got[name]; g[0] != float64(200) || strings.TrimSpace(fmt.Sprint(g[1])) != strings.TrimSpace(want) {
			t.Errorf("metadata %s: %v; want 200 and %q", name, g, want)
		}
	}
	ok("id", id)
	ok("ami", inst.ImageID)
	ok("ip", "169.254.169.15")
	ok("key", key.PublicKey)
	ok("userData", userData)
	ok("withToken", id)
	if g := got["token"]; g[0] != float64(200) || len(fmt.Sprint(g[1])) < 20 {
		t.Errorf("PUT /latest/api/token: %v; want 200 and a token", g)
	}
	for name, status := range map[string]float64{"badToken": 401, "forwarded": 403} {
		if g := got[name]; g[0] != status {
			t.Errorf("metadata %s: %v; want %v", name, g, status)
		}
	}
	// The token lives for its 5 s, then is refused.
	expired := `
import sys, urllib.request as u
try:
    u.urlopen(u.Request("http://169.254.169.254/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": sys.argv[1]}), timeout=20)
    print(200)
except u.HTTPError as e:
    print(e.code)
`
	token := fmt.Sprint(got["token"][1])
	kilntest.Poll(t, 30*time.Second, "the token to expire", func() bool {
		_, out, _ := kiln(t, socket, "exec", "deb", "--", "python3", "-c", expired, token)
		return strings.TrimSpace(out) == "401"
	}, func() string { return "" })

	// The service answers no one else: not a process of the host, nor a QEMU user that is
	// no instance's.
	resp, err := http.Get("http://" + metadataAddr(t, socket) + "/latest/meta-data/instance-id")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("the metadata service asked by a host process: %v, %v; want 403", resp, err)
	}
}

// metadataAddr is where kilnd's metadata service listens, as kiln info says.
func metadataAddr(t *testing.T, socket string) string {
	_, out, _ := kiln(t, socket, "info", "-o", "json")
	var info api.Info
	json.Unmarshal([]byte(out), &info)
	_, addr, ok := strings.Cut(info.Network, "→ ")
	if !ok {
		t.Fatalf("kiln info's network %q names no metadata address", info.Network)
	}
	return strings.TrimSuffix(addr, ")")
}

// checkOutbound: the guest reaches another host of the host's network, but neither the
// host's own addresses nor its loopback (through its gateway), where only the metadata
// service (port 80) is let through.
func checkOutbound(t *testing.T, socket string) {
	hostIP := ""
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			hostIP = n.IP.String()
			break
		}
	}
	if hostIP == "" {
		t.Fatalf("the host has no IPv4 address but loopback's: %v", addrs)
	}
	var hits atomic.Int32
	serveOn := func(ln net.Listener) string {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			io.WriteString(w, "kiln-outbound")
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	}
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	remote := kilntest.NewRemoteHost(t)
	remotePort := serveOn(remote.Listen(t, 0))
	lanPort := serveOn(listen(hostIP + ":0"))
	loPort := serveOn(listen("127.0.0.1:0"))
	fetch := `
import sys, urllib.request as u
try:
    print(u.urlopen(sys.argv[1], timeout=10).read().decode())
except Exception as e:
    print("refused:", e)
`
	_, out, errOut := kiln(t, socket, "exec", "deb", "--", "python3", "-c", fetch, "http://"+remote.Addr+":"+remotePort+"/")
	if strings.TrimSpace(out) != "kiln-outbound" {
		t.Errorf("the guest fetching from another host (%s:%s): %q, %q", remote.Addr, remotePort, out, errOut)
	}
	hits.Store(0)
	for _, url := range []string{"http://" + hostIP + ":" + lanPort + "/", "http://169.254.169.254:" + loPort + "/"} {
		_, out, _ = kiln(t, socket, "exec", "deb", "--", "python3", "-c", fetch, url)
		if !strings.HasPrefix(strings.TrimSpace(out), "refused:") || hits.Load() != 0 {
			t.Errorf("the guest reached the host itself (%s): %q, %d requests", url, out, hits.Load())
		}
	}
}
