package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/builder"
	"kiln/hypervisor"
	"kiln/internal/kilntest"
)

// boot starts the guest over disk (and seed, when not empty) and returns the QEMU
// process, its console log path and its QMP socket.
func boot(t *testing.T, dir, disk, seed string) (*exec.Cmd, chan error, string, string) {
	t.Helper()
	out := kilntest.Guest(t)
	accel, reason, err := hypervisor.Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm"}.Choose(context.Background(), hypervisor.AccelAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator %s: %s", accel, reason)
	console := filepath.Join(dir, "console.log")
	os.Remove(console)
	qmp := filepath.Join(dir, "qmp.sock")
	os.Remove(qmp)
	args := []string{
		"-machine", "q35", "-accel", accel, "-nodefaults", "-display", "none", "-m", "256",
		"-kernel", filepath.Join(out, "vmlinuz"), "-initrd", filepath.Join(out, "initrd.img"),
		"-append", "console=ttyS0 root=/dev/vda quiet",
		"-drive", "file=" + disk + ",if=virtio,format=qcow2",
		"-serial", "file:" + console,
		"-qmp", "unix:" + qmp + ",server=on,wait=off",
	}
	if seed != "" {
		args = append(args, "-drive", "file="+seed+",if=virtio,format=raw,readonly=on")
	}
	// QEMU's own output goes to qemu.log beside the console, as kilnd keeps it: the
	// evidence a failed wait shows.
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer qlog.Close() // QEMU holds its own copy
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, exited, console, qmp
}

// bootDeadline bounds every wait on the guest: one that is not up by then fails the
// test with its console and QEMU's log.
const bootDeadline = 90 * time.Second

// waitConsole polls the console log until it holds want.
func waitConsole(t *testing.T, console, want string, exited chan error) string {
	t.Helper()
	deadline := time.Now().Add(bootDeadline)
	for {
		b, _ := os.ReadFile(console)
		s := strings.ReplaceAll(string(b), "\r", "")
		if strings.Contains(s, want) {
			return s
		}
		select {
		case err := <-exited:
			t.Fatalf("QEMU exited (%v) before %q\n%s", err, want, kilntest.Evidence(filepath.Dir(console)))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q on the console within %s\n%s", want, bootDeadline, kilntest.Evidence(filepath.Dir(console)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// powerdown presses the ACPI power button over QMP.
func powerdown(t *testing.T, sock string) {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		t.Fatal(err)
	}
	for _, cmd := range []string{"qmp_capabilities", "system_powerdown"} {
		fmt.Fprintf(c, `{"execute": %q}`+"\n", cmd)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			var reply map[string]json.RawMessage
			json.Unmarshal(line, &reply)
			if _, ok := reply["error"]; ok {
				t.Fatalf("%s: %s", cmd, line)
			}
			if _, ok := reply["return"]; ok {
				break
			}
		}
	}
}

func waitExit(t *testing.T, console string, exited chan error) {
	t.Helper()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("QEMU: %v\n%s", err, kilntest.Evidence(filepath.Dir(console)))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the guest did not power off within 60s of the power button\n%s", kilntest.Evidence(filepath.Dir(console)))
	}
}

// TestGuest boots the test guest over a qcow2 overlay with user data, checks its
// console lines, powers it off with the ACPI power button, and boots it again to see
// that what the user data wrote stayed.
func TestGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	out := kilntest.Guest(t)
	dir, err := os.MkdirTemp("/tmp", "kg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	disk := filepath.Join(dir, "disk.qcow2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
		"-b", filepath.Join(out, "root.qcow2"), disk).CombinedOutput(); err != nil {
		t.Fatalf("overlay: %v: %s", err, b)
	}
	seed := filepath.Join(dir, "seed.iso")
	if err := builder.WriteSeed(seed, []byte("#!/bin/sh\necho 7 > /etc/kiln-gen\n"), []byte("instance-id: i-0123456789abcdef0\n")); err != nil {
		t.Fatal(err)
	}

	_, exited, console, qmp := boot(t, dir, disk, seed)
	log := waitConsole(t, console, "KILN-GUEST ready", exited)
	for _, want := range []string{"KILN-GUEST boot gen=0", "KILN-GUEST user-data exit=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, log)
		}
	}
	powerdown(t, qmp)
	waitExit(t, console, exited)
	waitConsole(t, console, "KILN-GUEST poweroff", make(chan error))

	_, exited, console, qmp = boot(t, dir, disk, "")
	log = waitConsole(t, console, "KILN-GUEST ready", exited)
	if !strings.Contains(log, "KILN-GUEST boot gen=7") || strings.Contains(log, "user-data") {
		t.Errorf("second boot:\n%s", log)
	}
	powerdown(t, qmp)
	waitExit(t, console, exited)
}
