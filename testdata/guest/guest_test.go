package guest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/builder"
	"kiln/hypervisor"
	"kiln/internal/kilntest"
)

// stopDeadline bounds the guest's power-off after the power button.
const stopDeadline = 60 * time.Second

// boot starts the guest over the qcow2 overlay disk (over the guest's root.qcow2) and
// seed (a raw cidata disk, when not empty) through the hypervisor package, as kilnd
// does, with a console file of this boot only, and returns the machine.
func boot(t *testing.T, ctx context.Context, dir, disk, seed string) *hypervisor.Machine {
	t.Helper()
	g := kilntest.GuestFiles(t)
	uid, gid := kilntest.QEMUUser()
	user := hypervisor.User{UID: uid, GID: gid}
	accel, reason, err := hypervisor.Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm", User: &user}.Choose(ctx, hypervisor.AccelAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator %s: %s", accel, reason)
	os.Remove(filepath.Join(dir, hypervisor.ConsoleFile)) // the console of this boot only
	disks := []hypervisor.Disk{{ID: "vda", Files: []*os.File{kilntest.Open(t, g.Disk, os.O_RDONLY), kilntest.Open(t, disk, os.O_RDWR)}}}
	if seed != "" {
		disks = append(disks, hypervisor.Disk{ID: "vdb", Files: []*os.File{kilntest.Open(t, seed, os.O_RDONLY)}, Format: "raw", ReadOnly: true})
	}
	m, err := hypervisor.Start(ctx, "qemu-system-x86_64", hypervisor.Spec{
		Dir: dir, Accel: accel, CPUs: 1, MemoryMiB: 256, User: user,
		Kernel: kilntest.Open(t, g.Kernel, os.O_RDONLY), Initrd: kilntest.Open(t, g.Initrd, os.O_RDONLY),
		Cmdline: g.Cmdline + " quiet", Disks: disks,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // no QEMU outlives the test: quit, then kill
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Stop(ctx, 0)
	})
	return m
}

// waitConsole waits (kilntest.GuestDeadline) until the machine's console holds want;
// it fails at once when QEMU has exited, with the console's tail and QEMU's log.
func waitConsole(t *testing.T, m *hypervisor.Machine, want string) string {
	t.Helper()
	return kilntest.Console{Path: filepath.Join(m.Dir, hypervisor.ConsoleFile), Exited: m.Exited()}.Wait(t, want, 1)
}

// powerOff presses the ACPI power button and waits (stopDeadline) for the guest to
// power itself off.
func powerOff(t *testing.T, ctx context.Context, m *hypervisor.Machine) {
	t.Helper()
	if err := m.Powerdown(ctx); err != nil {
		t.Fatalf("power button: %v\n%s", err, kilntest.Evidence(m.Dir))
	}
	select {
	case <-m.Exited():
	case <-time.After(stopDeadline):
		t.Fatalf("the guest did not power off within %s of the power button\n%s", stopDeadline, kilntest.Evidence(m.Dir))
	}
	// QEMU ended with status 0: the machine adds a line to QEMU's log otherwise.
	if b, _ := os.ReadFile(filepath.Join(m.Dir, hypervisor.LogFile)); strings.Contains(string(b), fmt.Sprintf("kilnd: QEMU %d exited: ", m.PID)) {
		t.Errorf("QEMU did not exit cleanly\n%s", kilntest.Evidence(m.Dir))
	}
}

// TestGuest boots the test guest over a qcow2 overlay with user data, checks its
// console lines, powers it off with the ACPI power button, and boots it again to see
// that what the user data wrote stayed.
func TestGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	g := kilntest.GuestFiles(t)
	dir := kilntest.ShortDir(t)
	disk := filepath.Join(dir, "disk.qcow2")
	if b, err := kilntest.Command(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", g.Disk, disk).CombinedOutput(); err != nil {
		t.Fatalf("overlay: %v: %s", err, b)
	}
	seed := filepath.Join(dir, "seed.iso")
	if err := builder.WriteSeed(seed, []byte("#!/bin/sh\necho 7 > /etc/kiln-gen\n"), []byte("instance-id: i-0123456789abcdef0\n")); err != nil {
		t.Fatal(err)
	}
	// Every step below ends: QMP calls are bounded by this (more than the waits in it
	// add up to).
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	m := boot(t, ctx, dir, disk, seed)
	log := waitConsole(t, m, "KILN-GUEST ready")
	for _, want := range []string{"KILN-GUEST boot gen=0", "KILN-GUEST user-data exit=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q:\n%s", want, log)
		}
	}
	powerOff(t, ctx, m)
	waitConsole(t, m, "KILN-GUEST poweroff")

	m = boot(t, ctx, dir, disk, "")
	log = waitConsole(t, m, "KILN-GUEST ready")
	if !strings.Contains(log, "KILN-GUEST boot gen=7") || strings.Contains(log, "user-data") {
		t.Errorf("second boot:\n%s", log)
	}
	powerOff(t, ctx, m)
}
