package hypervisor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kiln/internal/kilntest"
)

// waitConsole waits (kilntest.GuestDeadline) until the machine's console holds want n
// times; it fails at once when QEMU has exited, with the console's tail and QEMU's log.
func waitConsole(t *testing.T, m *Machine, want string, n int) string {
	t.Helper()
	return kilntest.Console{Path: filepath.Join(m.Dir, ConsoleFile), Exited: m.Exited()}.Wait(t, want, n)
}

// waitExited waits (bounded) for QEMU to exit.
func waitExited(t *testing.T, m *Machine, why string) {
	t.Helper()
	select {
	case <-m.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("QEMU %d did not exit within 30s of %s\n%s", m.PID, why, kilntest.Evidence(m.Dir))
	}
}

// guestSpec is the spec of a machine of the test guest, in a new directory under /tmp,
// its disk vda an overlay (vda.qcow2 there) over the guest's root.qcow2. It skips the
// test with -short.
func guestSpec(t *testing.T) Spec {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a guest")
	}
	g := kilntest.Guest(t)
	dir := kilntest.ShortDir(t)
	overlay := filepath.Join(dir, "vda.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Join(g, "root.qcow2"), overlay)
	user := testUser()
	accel, _, _ := Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm", User: &user}.Choose(context.Background(), AccelAuto)
	files := openFiles(t, filepath.Join(g, "vmlinuz"), filepath.Join(g, "initrd.img"), filepath.Join(g, "root.qcow2"))
	top, err := os.OpenFile(overlay, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Close() })
	return Spec{
		Dir: dir, Accel: accel, CPUs: 1, MemoryMiB: 256, User: user,
		Kernel: files[0], Initrd: files[1], Cmdline: kilntest.GuestCmdline + " quiet",
		Disks: []Disk{{ID: "vda", Files: []*os.File{files[2], top}}},
	}
}

// qemuImg runs qemu-img (bounded) and fails the test with its output if it fails.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// TestMachineLifecycle boots the test guest detached, stops it with the power button,
// boots it again, reattaches to it as a restarted kilnd would, reboots it through the
// reattached machine, and stops it with quit.
func TestMachineLifecycle(t *testing.T) {
	spec := guestSpec(t)
	dir, user := spec.Dir, spec.User
	// Every step below ends: QMP calls and stops are bounded by this (more than the
	// waits in it add up to).
	ctx, cancelAll := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelAll()
	m, err := Start(ctx, "qemu-system-x86_64", spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.kill() })
	// QEMU is in a session of its own: a signal to kilnd's process group misses it.
	if sid, _ := unix.Getsid(m.PID); sid != m.PID {
		t.Errorf("QEMU's session is %d, not its own", sid)
	}
	waitConsole(t, m, "KILN-GUEST ready", 1)
	checkConfined(t, m, user, dir)
	if st, err := m.Status(ctx); err != nil || !st.Running || st.State != RunStateRunning {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if err := m.Stop(ctx, 30*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, kilntest.Evidence(dir))
	}
	waitConsole(t, m, "KILN-GUEST poweroff", 1) // the guest powered itself off

	m, err = Start(ctx, "qemu-system-x86_64", spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.kill() })
	waitConsole(t, m, "KILN-GUEST ready", 2) // the console keeps both boots
	m.client.Disconnect()                    // as a killed kilnd would leave it

	again, err := Attach(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.PID != m.PID {
		t.Errorf("attached to pid %d, started %d", again.PID, m.PID)
	}
	// A kilnd killed just after it started QEMU may find the last run's pid file, or
	// none: the QEMU is found by its command line all the same.
	again.client.Disconnect()
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte("999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if again, err = Attach(ctx, dir); err != nil {
		t.Fatalf("attach with a stale pid file: %v", err)
	} else if again.PID != m.PID {
		t.Errorf("attached with a stale pid file to pid %d, started %d", again.PID, m.PID)
	}
	// Reboot returns once QEMU has reset the machine: the guest boots a third time.
	if err := again.Reboot(ctx); err != nil {
		t.Fatalf("reboot: %v\n%s", err, kilntest.Evidence(dir))
	}
	waitConsole(t, m, "KILN-GUEST ready", 3)
	if err := again.Stop(ctx, 0); err != nil { // no grace: quit
		t.Fatal(err)
	}
	waitExited(t, m, "quit")
	if err := again.Stop(ctx, 0); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	if _, err := Attach(ctx, dir); err == nil {
		t.Error("Attach to a stopped machine succeeded")
	}
}

func TestStartFailure(t *testing.T) {
	dir, err := os.MkdirTemp("", "kiln-start")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the script runs as the machine's user
	crash := filepath.Join(dir, "qemu")
	os.WriteFile(crash, []byte("#!/bin/sh\necho 'qemu: could not open disk image: Permission denied' >&2\nexit 1\n"), 0o755)
	disk := openFiles(t, crash)
	spec := Spec{Dir: filepath.Join(dir, "inst"), Accel: AccelTCG, CPUs: 1, MemoryMiB: 64, User: testUser(),
		Disks: []Disk{{ID: "vda", Files: disk, ReadOnly: true}}}
	_, err = Start(context.Background(), crash, spec)
	if err == nil || !strings.Contains(err.Error(), "Permission denied") || !strings.Contains(err.Error(), "exited at start") {
		t.Errorf("Start of a QEMU that exits: %v", err)
	}
}

// testUser is who test machines run as (kilntest.QEMUUser).
func testUser() User {
	uid, gid := kilntest.QEMUUser()
	return User{UID: uid, GID: gid}
}

// openFiles opens paths read-only (kilntest.Open), closed when the test ends.
func openFiles(t *testing.T, paths ...string) []*os.File {
	t.Helper()
	var files []*os.File
	for _, p := range paths {
		files = append(files, kilntest.Open(t, p, os.O_RDONLY))
	}
	return files
}

// checkConfined checks that QEMU runs as user under its seccomp sandbox, with no file
// of dir open but those kilnd passed (the console, its log, the disk's top), and that
// its command line names no file.
func checkConfined(t *testing.T, m *Machine, user User, dir string) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", user.UID, user.UID, user.UID, user.UID), "Seccomp:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("QEMU's status lacks %q:\n%s", want, status)
		}
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", m.PID))
	allowed := map[string]bool{filepath.Join(dir, ConsoleFile): true, filepath.Join(dir, LogFile): true, filepath.Join(dir, "vda.qcow2"): true}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err == nil && strings.HasPrefix(target, dir) && !allowed[target] {
			t.Errorf("QEMU holds %s: %s", fd, target)
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID))
	if bytes.Contains(cmdline, []byte(dir)) || !bytes.Contains(cmdline, []byte("-sandbox\x00"+Sandbox)) {
		t.Errorf("QEMU's command line names its directory or lacks the sandbox: %q", cmdline)
	}
}
