package kilntest

import (
	"os"
	"path/filepath"
	"testing"
)

// Guest returns the directory of the test guest (vmlinuz, initrd.img, root.qcow2), which
// 'make guest' builds in testdata/guest/out at the module's root. Without it a test
// fails under CI and is skipped elsewhere.
func Guest(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(root, "testdata", "guest", "out")
	if _, err := os.Stat(filepath.Join(d, "root.qcow2")); err != nil {
		Missing(t, "the test guest is missing: run 'make guest' (%v)", err)
	}
	return d
}

// GuestCmdline is the kernel command line the test guest boots with: its console on the
// serial port, its root the first disk, and no check of the timer interrupt (under TCG on
// a busy host the kernel's check can miss its ticks and panic with "IO-APIC + timer
// doesn't work!"; Fedora's and Ubuntu's cloud images boot with it too).
const GuestCmdline = "console=ttyS0 root=/dev/vda no_timer_check"

// GuestImage is the test guest as an image is registered from it.
type GuestImage struct {
	Disk, Kernel, Initrd string // root.qcow2, vmlinuz, initrd.img
	Cmdline              string // GuestCmdline
}

// GuestFiles is the test guest's files (Guest: missing, it fails under CI and is
// skipped elsewhere).
func GuestFiles(t testing.TB) GuestImage {
	t.Helper()
	d := Guest(t)
	return GuestImage{Disk: filepath.Join(d, "root.qcow2"), Kernel: filepath.Join(d, "vmlinuz"),
		Initrd: filepath.Join(d, "initrd.img"), Cmdline: GuestCmdline}
}

// RegisterFlags are the flags of 'kiln image register' for the guest.
func (g GuestImage) RegisterFlags() []string {
	return []string{"--disk", g.Disk, "--kernel", g.Kernel, "--initrd", g.Initrd, "--cmdline", g.Cmdline}
}

// QEMUUser is the user and group a test's own QEMU runs as (QEMU never runs as root):
// under root a uid of kilnd's QEMU range, else the test's own user.
func QEMUUser() (uid, gid uint32) {
	if os.Geteuid() != 0 {
		return uint32(os.Getuid()), uint32(os.Getgid())
	}
	return 2_000_065_000, 2_000_065_000
}

// DebianDisk returns the Debian test guest's disk (a partitioned disk that boots alone,
// as a downloaded cloud image does), which 'make guest-debian' builds in
// testdata/guest-debian/out. Without it a test fails under CI and is skipped elsewhere.
func DebianDisk(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(root, "testdata", "guest-debian", "out", "disk.qcow2")
	if _, err := os.Stat(disk); err != nil {
		Missing(t, "the Debian test guest is missing: run 'make guest-debian' (%v)", err)
	}
	return disk
}
