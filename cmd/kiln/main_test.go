package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/hypervisor"

	"kiln/internal/kilntest"
)

// kilndBin is the kilnd the tests start, built by TestMain (with -race when the tests
// run under the race detector, so that the daemon is checked as well).
var kilndBin string

// testAccel is the accelerator of the test kilnds: the probe's choice, made once for
// the run rather than by each kilnd (see daemon/kilnd_test.go).
var testAccel string

func TestMain(m *testing.M) {
	if os.Getenv("KILN_TEST_PROCESS") == "1" { // kiln itself, as a child: no kilnd
		os.Exit(m.Run())
	}
	dir, err := kilntest.Build("kiln/cmd/kilnd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "build kilnd: %v\n", err)
		os.Exit(1)
	}
	kilndBin = filepath.Join(dir, "kilnd")
	testAccel, _, err = hypervisor.Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm"}.Choose(context.Background(), hypervisor.AccelAuto)
	if err != nil {
		testAccel = "" // kilnd then chooses, and says what is wrong
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startDaemon starts a kilnd process (kilntest's harness) on a fresh root and socket and
// returns the socket. When the test ends, the QEMUs it left are killed, and kilnd stops
// on SIGTERM within a minute with status 0 and no data race.
func startDaemon(t *testing.T) string {
	t.Helper()
	return startKilnd(t).Socket
}

// startKilnd is startDaemon giving kilnd's harness, to kill or restart it.
func startKilnd(t *testing.T) *kilntest.Kilnd {
	t.Helper()
	k := kilntest.NewKilnd(t, kilndBin, kilntest.ShortDir(t), nil)
	c := client.New(k.Socket)
	k.Ready = func(ctx context.Context) error { _, err := c.Info(ctx); return err }
	k.Accel = testAccel
	k.Start()
	t.Cleanup(func() {
		k.KillQEMUs()
		k.Stop()
		if code := k.Cmd.ProcessState.ExitCode(); code != 0 && code != kilntest.RaceExit { // a race: Stop said so
			t.Errorf("kilnd exited with status %d on SIGTERM\n%s", code, kilntest.Tail(k.Log.String(), 30))
		}
	})
	return k
}

// cliDeadline bounds one kiln command, --wait included: a guest that is not up by then
// fails the test with its console and QEMU's log.
const cliDeadline = kilntest.GuestDeadline

// kiln runs the CLI with args against socket and returns its exit status and output.
// A command still running after cliDeadline fails the test with the evidence of every
// instance of the daemon.
func kiln(t *testing.T, socket string, args ...string) (int, string, string) {
	t.Helper()
	return kilnWithin(t, cliDeadline, socket, args...)
}

// kilnWithin is kiln with another deadline.
func kilnWithin(t *testing.T, d time.Duration, socket string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, append([]string{"--socket", socket}, args...), &stdout, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("kiln %s: not done within %s (exit %d, stderr %q)\n%s",
			strings.Join(args, " "), d, code, stderr.String(), kilntest.InstancesEvidence(filepath.Join(filepath.Dir(socket), "root")))
	}
	return code, stdout.String(), stderr.String()
}

func TestCLI(t *testing.T) {
	g := kilntest.GuestFiles(t)
	socket := startDaemon(t)

	code, out, errOut := kiln(t, socket, "image", "register", "kiln-guest", "--wait", "-q",
		"--disk", g.Disk+",format=qcow2,device=/dev/vda",
		"--kernel", g.Kernel, "--initrd", g.Initrd,
		"--cmdline", kilntest.GuestCmdline, "--tag", "env=test", "--description", "the test guest")
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "ami-") || strings.Contains(id, "\n") {
		t.Fatalf("register: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	code, out, _ = kiln(t, socket, "image", "ls")
	if code != 0 || !strings.Contains(out, "IMAGE ID") || !strings.Contains(out, id) || !strings.Contains(out, "available") {
		t.Errorf("ls: exit %d\n%s", code, out)
	}
	code, out, _ = kiln(t, socket, "image", "ls", "-q", "--filter", "tag:env=test", "--filter", "name=kiln-*")
	if code != 0 || strings.TrimSpace(out) != id {
		t.Errorf("ls -q --filter: exit %d, %q", code, out)
	}
	code, out, _ = kiln(t, socket, "image", "ls", "-o", "json", "--filter", "name=nothing*")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("ls -o json with no match: exit %d, %q", code, out)
	}

	code, out, _ = kiln(t, socket, "image", "inspect", "kiln-guest", "-o", "json")
	var im api.Image
	if code != 0 || json.Unmarshal([]byte(out), &im) != nil || im.ID != id || im.BlockDeviceMappings[0].EBS.SnapshotID == "" {
		t.Fatalf("inspect -o json: exit %d\n%s", code, out)
	}
	for _, field := range []string{`"ownerId"`, `"rootDeviceType"`, `"blockDeviceMappings"`, `"snapshotId"`, `"volumeSize"`, `"deleteOnTermination"`, `"creationDate"`} {
		if !strings.Contains(out, field) {
			t.Errorf("inspect -o json lacks %s", field)
		}
	}
	code, out, _ = kiln(t, socket, "image", "inspect", id)
	if code != 0 || !strings.Contains(out, "Device /dev/vda:") || !strings.Contains(out, "Tag env:") {
		t.Errorf("inspect: exit %d\n%s", code, out)
	}

	if code, _, errOut = kiln(t, socket, "image", "tag", id, "team=kiln", "tier=1"); code != 0 {
		t.Errorf("tag: exit %d: %s", code, errOut)
	}
	if code, _, errOut = kiln(t, socket, "image", "untag", "kiln-guest", "tier"); code != 0 {
		t.Errorf("untag: exit %d: %s", code, errOut)
	}
	c := client.New(socket)
	got, err := c.Image(context.Background(), id)
	if err != nil || got.Tags["team"] != "kiln" || got.Tags["tier"] != "" || got.Tags["env"] != "test" {
		t.Errorf("tags after tag/untag: %v, %v", got.Tags, err)
	}

	code, out, _ = kiln(t, socket, "info", "-o", "json")
	var info api.Info
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.Images != 1 || (info.Accelerator != "kvm" && info.Accelerator != "tcg") {
		t.Errorf("info: exit %d\n%s", code, out)
	}

	// API errors: exit 1, the code and a hint on stderr.
	code, _, errOut = kiln(t, socket, "image", "inspect", "nope-image")
	if code != 1 || !strings.Contains(errOut, api.CodeInvalidAMIIDNotFound) || !strings.Contains(errOut, "hint:") {
		t.Errorf("inspect unknown: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = kiln(t, socket, "image", "register", "kiln-guest", "--disk", g.Disk)
	if code != 1 || !strings.Contains(errOut, api.CodeInvalidAMINameDuplicate) {
		t.Errorf("register duplicate: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = kiln(t, socket, "image", "ls", "--filter", "colour=red")
	if code != 1 || !strings.Contains(errOut, api.CodeInvalidParameterValue) {
		t.Errorf("ls with an unknown filter: exit %d, stderr %q", code, errOut)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		{"image", "register", "no-disk"},
		{"image", "inspect"},
		{"image", "frobnicate"},
		{"image", "ls", "--bogus"},
		{"image", "tag", id, "novalue"},
		{"info", "-o", "yaml"},
	} {
		if code, _, errOut := kiln(t, socket, args...); code != 2 {
			t.Errorf("kiln %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, errOut)
		}
	}

	// A daemon that is not there: exit 1 with a hint to start it.
	code, _, errOut = kiln(t, filepath.Join(t.TempDir(), "none.sock"), "info")
	if code != 1 || !strings.Contains(errOut, "not reachable") {
		t.Errorf("no daemon: exit %d, stderr %q", code, errOut)
	}

	// One unknown image among several: the others are deregistered, the failure said.
	code, out, errOut = kiln(t, socket, "image", "deregister", "nope-image", "kiln-guest")
	if code != 1 || strings.TrimSpace(out) != id || !strings.Contains(errOut, `"nope-image"`) {
		t.Errorf("deregister: exit %d, %q, %q", code, out, errOut)
	}
	code, out, _ = kiln(t, socket, "gc")
	if code != 0 || !strings.Contains(out, "removed 5 blobs") {
		t.Errorf("gc: exit %d, %q", code, out)
	}
}

func TestCLIInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	socket := startDaemon(t)
	registerGuest(t, socket, "kiln-guest", kilntest.GuestCmdline)
	ud := filepath.Join(t.TempDir(), "user-data")
	os.WriteFile(ud, []byte("#!/bin/sh\necho 3 > /etc/kiln-gen\n"), 0o644)
	code, out, errOut := kiln(t, socket, "run", "kiln-guest", "--name", "web", "--cpus", "1", "--memory", "256M", "--user-data", ud, "--wait", "-q")
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "i-") {
		t.Fatalf("run: exit %d, %q, %q", code, out, errOut)
	}
	t.Cleanup(func() { kiln(t, socket, "terminate", "--force", id) })
	code, out, _ = kiln(t, socket, "ps")
	if code != 0 || !strings.Contains(out, "INSTANCE ID") || !strings.Contains(out, id) || !strings.Contains(out, "running") || !strings.Contains(out, "256 MiB") {
		t.Errorf("ps: exit %d\n%s", code, out)
	}
	code, out, _ = kiln(t, socket, "instance", "inspect", "web", "-o", "json")
	var inst api.Instance
	if code != 0 || json.Unmarshal([]byte(out), &inst) != nil || inst.ID != id || !inst.Ready || inst.MemoryMiB != 256 {
		t.Errorf("inspect -o json: exit %d\n%s", code, out)
	}
	for _, field := range []string{`"imageId"`, `"launchTime"`, `"volumeId"`, `"cpus"`, `"memoryMiB"`, `"ownerId"`} {
		if !strings.Contains(out, field) {
			t.Errorf("inspect -o json lacks %s", field)
		}
	}
	code, out, _ = kiln(t, socket, "console", "web")
	if code != 0 || !strings.Contains(out, "KILN-GUEST user-data exit=0") {
		t.Errorf("console: exit %d\n%s", code, out)
	}
	if inst.SSHPort < 42200 || len(inst.Ports) != 1 || inst.Ports[0] != (api.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: inst.SSHPort, GuestPort: 22}) {
		t.Errorf("ports: SSH %d, %+v; want SSH's loopback port forwarded to 22", inst.SSHPort, inst.Ports)
	}
	if code, _, errOut = kiln(t, socket, "stop", "web", "--wait"); code != 0 {
		t.Fatalf("stop: %s", errOut)
	}
	if code, _, errOut = kiln(t, socket, "start", "web", "--wait"); code != 0 {
		t.Fatalf("start: %s", errOut)
	}
	var again api.Instance
	if _, out, _ = kiln(t, socket, "instance", "inspect", "web", "-o", "json"); json.Unmarshal([]byte(out), &again) != nil || again.SSHPort != inst.SSHPort {
		t.Errorf("SSH port after stop and start: %d, want %d as before", again.SSHPort, inst.SSHPort)
	}
	if _, out, _ = kiln(t, socket, "console", "web"); !strings.Contains(strings.ReplaceAll(out, "\r", ""), "KILN-GUEST boot gen=3") {
		t.Errorf("after stop/start:\n%s", out)
	}

	// Refusals: exit 1 with the code; usage errors: exit 2.
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, 20<<20), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"run", "no-such-image"}, 1, api.CodeInvalidAMIIDNotFound},
		{[]string{"run", "kiln-guest", "--memory", "0"}, 1, api.CodeInvalidParameterValue},
		{[]string{"run", "kiln-guest", "--cpus", "1000"}, 1, "vCPUs"},
		{[]string{"run", "kiln-guest", "--user-data", big}, 1, "at most"},
		{[]string{"run", "kiln-guest", "--name", "web"}, 1, api.CodeInstanceNameDuplicate},
		{[]string{"stop", "no-such-instance"}, 1, api.CodeInvalidInstanceNotFound},
		{[]string{"run", "kiln-guest", "--volume", "vdb"}, 2, "DEVICE=SIZE"},
		{[]string{"stop"}, 2, "INSTANCE"},
	} {
		code, _, errOut := kiln(t, socket, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.says) {
			t.Errorf("kiln %s: exit %d, stderr %q; want %d saying %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.says)
		}
	}
	if code, _, errOut = kiln(t, socket, "terminate", "web", "--wait"); code != 0 {
		t.Fatalf("terminate: %s", errOut)
	}
	if _, out, _ = kiln(t, socket, "ps", "-a", "-q"); strings.TrimSpace(out) != id {
		t.Errorf("ps -a -q: %q", out)
	}
}
