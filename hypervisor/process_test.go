package hypervisor

import (
	"context"
	"golang.org/x/sys/unix"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// bootDeadline bounds every wait on the guest: one that is not up by then fails the
// test with its console and QEMU's log.
const bootDeadline = 90 * time.Second

// waitConsole polls the console log until it holds want n times.
func waitConsole(t *testing.T, m *Machine, want string, n int) string {
	t.Helper()
	deadline := time.Now().Add(bootDeadline)
	for {
		b, _ := os.ReadFile(filepath.Join(m.Dir, ConsoleFile))
		s := strings.ReplaceAll(string(b), "\r", "")
		if strings.Count(s, want) >= n {
			return s
		}
		select {
		case <-m.Exited():
			t.Fatalf("QEMU exited before %q %d times\n%s", want, n, kilntest.Evidence(m.Dir))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q %d times on the console within %s\n%s", want, n, bootDeadline, kilntest.Evidence(m.Dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// TestMachineLifecycle boots the test guest detached, stops it with the power button,
// boots it again, reattaches to it as a restarted kilnd would, and stops it with quit.
func TestMachineLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	g := kilntest.Guest(t)
	dir, err := os.MkdirTemp("/tmp", "km")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	overlay := filepath.Join(dir, "vda.qcow2")
	ictx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ictx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Join(g, "root.qcow2"), overlay).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	accel, _, _ := Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm"}.Choose(context.Background(), AccelAuto)
	spec := Spec{
		Name: "test", Dir: dir, Accel: accel, CPUs: 1, MemoryMiB: 256,
		Kernel: filepath.Join(g, "vmlinuz"), Initrd: filepath.Join(g, "initrd.img"), Cmdline: "console=ttyS0 root=/dev/vda quiet",
		Disks: []Disk{{ID: "vda", Chain: []string{filepath.Join(g, "root.qcow2"), overlay}}},
	}
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
	if st, err := m.Monitor().QueryStatus(); err != nil || !st.Running {
		t.Fatalf("query-status: %+v, %v", st, err)
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
	m.QMP.Disconnect()                       // as a killed kilnd would leave it

	again, err := Attach(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.PID != m.PID {
		t.Errorf("attached to pid %d, started %d", again.PID, m.PID)
	}
	// A kilnd killed just after it started QEMU may find the last run's pid file, or
	// none: the QEMU is found by its command line all the same.
	again.QMP.Disconnect()
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte("999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if again, err = Attach(ctx, dir); err != nil {
		t.Fatalf("attach with a stale pid file: %v", err)
	} else if again.PID != m.PID {
		t.Errorf("attached with a stale pid file to pid %d, started %d", again.PID, m.PID)
	}
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
	dir := t.TempDir()
	crash := filepath.Join(dir, "qemu")
	os.WriteFile(crash, []byte("#!/bin/sh\necho 'qemu: could not open disk image: Permission denied' >&2\nexit 1\n"), 0o755)
	spec := Spec{Name: "x", Dir: filepath.Join(dir, "inst"), Accel: AccelTCG, CPUs: 1, MemoryMiB: 64, Disks: []Disk{{ID: "vda", Chain: []string{"/nonexistent"}}}}
	_, err := Start(context.Background(), crash, spec)
	if err == nil || !strings.Contains(err.Error(), "Permission denied") || !strings.Contains(err.Error(), "exited at start") {
		t.Errorf("Start of a QEMU that exits: %v", err)
	}
}
