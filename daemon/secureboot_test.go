package daemon_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestSecureBoot boots the Debian test guest's one disk (testdata/guest-debian: an MBR,
// a FAT boot partition, an ext4 root) through Debian's own EFI loaders, the signed chain
// Debian provides for a Secure Boot with Microsoft's keys: shim (shim-signed, signed by
// Microsoft) as the removable-media loader, GRUB (grub-efi-amd64-signed, signed by
// Debian) beside it, the cloud kernel (signed by Debian). With --secure-boot (the
// secboot code and the ms variable store of Debian's ovmf) it boots to ready with
// Secure Boot enabled, as the kernel and mokutil in the guest say; with boot mode uefi
// alone it boots to ready with Secure Boot off. The same disk with one link of the chain
// stripped of its signature (sbattach --remove) is refused by the link before it: the
// firmware refuses shim, shim refuses GRUB, GRUB (through shim) refuses the kernel; no
// kernel starts and the instance never becomes ready. With legacy BIOS the same disk
// starts the same kernel through syslinux (TestDebianGuest boots it so to the end).
func TestSecureBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the Debian guest")
	}
	disk := kilntest.DebianDisk(t)
	for _, prog := range []string{"qemu-img", "sbattach", "sbverify", "mcopy"} {
		kilntest.Need(t, prog)
	}
	k := newKilnd(t)
	t.Cleanup(k.KillQEMUs)
	ctx := ctxT(t)
	register := func(name, path, mode string, secureBoot bool, format string) api.Image {
		t.Helper()
		im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: name, BootMode: mode, SecureBoot: secureBoot,
			Disks: []api.Disk{{Name: path, Format: format}}})
		if err == nil {
			im, err = k.WaitImage(guestCtx(t), im.ID, nil)
		}
		if err != nil || im.SecureBoot != secureBoot {
			t.Fatalf("register %s: %+v, %v", name, im, err)
		}
		return im
	}
	terminate := func(id string) {
		t.Helper()
		if _, err := k.InstanceAction(ctx, id, "terminate", true); err != nil {
			t.Fatal(err)
		}
	}

	// Refused: each link unsigned in turn, on a disk of its own, all launched at once;
	// each is terminated once its refusal is on the console.
	refused := []struct{ file, says string }{
		{"/EFI/BOOT/BOOTX64.EFI", "Access Denied"},                                  // shim, by the firmware
		{"/EFI/BOOT/grubx64.efi", "Verification failed: (0x1A) Security Violation"}, // GRUB, by shim
		{"/vmlinuz", "error: bad shim signature"},                                   // the kernel, by GRUB
	}
	var launched []api.Instance
	start := time.Now()
	for i, r := range refused {
		im := register("unsigned-"+strconv.Itoa(i), unsignedDisk(t, disk, r.file), "uefi", true, "raw")
		launched = append(launched, runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "micro"}))
	}
	for i, r := range refused {
		id := launched[i].ID
		con := waitConsole(t, k, id, r.says, 1)
		if strings.Contains(con, "EFI stub") || strings.Contains(con, "Linux version") {
			t.Errorf("%s unsigned: a kernel started:\n%s", r.file, kilntest.Tail(con, 20))
		}
		if got, err := k.Instance(ctx, id); err != nil || got.Ready {
			t.Errorf("%s unsigned: the instance is ready: %+v, %v", r.file, got, err)
		}
		terminate(id)
	}
	t.Logf("the three refusals: %s", time.Since(start).Round(time.Second))

	// The disk as built: with legacy BIOS syslinux starts the kernel; with UEFI and
	// Secure Boot, shim, GRUB and the kernel boot to ready; without Secure Boot they
	// start the kernel, which says Secure Boot is off (then it is terminated: one
	// Debian boot to ready is enough, and they are slow here).
	bios := runOne(t, k, api.RunInstancesRequest{Image: register("debian-bios", disk, "legacy-bios", false, "qcow2").ID, InstanceType: "micro"})
	// (SeaBIOS and syslinux write to the screen only: the serial console starts with the kernel.)
	con := waitConsole(t, k, bios.ID, "Linux version", 1)
	if strings.Contains(con, "EDK II") || strings.Contains(con, "GRUB") || bios.BootMode != "legacy-bios" {
		t.Errorf("legacy BIOS (boot mode %q) went through UEFI:\n%s", bios.BootMode, kilntest.Tail(con, 20))
	}
	terminate(bios.ID)
	// Both UEFI boots at once; each is done when its kernel says how it was started
	// (cloud-init's ready would add minutes of a TCG guest and prove nothing more of
	// the boot chain).
	start = time.Now()
	plain := runOne(t, k, api.RunInstancesRequest{Image: register("debian-uefi", disk, "uefi", false, "qcow2").ID, InstanceType: "small"})
	sb := runOne(t, k, api.RunInstancesRequest{Image: register("debian-sb", disk, "uefi", true, "qcow2").ID, InstanceType: "small"})
	for _, c := range []struct {
		inst api.Instance
		says []string // on the console, the last the kernel's
	}{
		{plain, []string{"secureboot: Secure boot disabled"}},
		{sb, []string{"Kernel is locked down from EFI Secure Boot", "secureboot: Secure boot enabled"}},
	} {
		id := c.inst.ID
		con := waitConsole(t, k, id, c.says[len(c.says)-1], 1)
		t.Logf("%s (Secure Boot %v): its kernel started %s after launch", id, c.inst.SecureBoot, time.Since(start).Round(time.Second))
		for _, want := range append([]string{"Welcome to GRUB!", "efi: EFI v2.70 by EDK II"}, c.says...) {
			if !strings.Contains(con, want) {
				t.Errorf("%s (Secure Boot %v): the console lacks %q\n%s", id, c.inst.SecureBoot, want, kilntest.Tail(con, 40))
			}
		}
		if c.inst.BootMode != "uefi" {
			t.Errorf("%s booted with %q", id, c.inst.BootMode)
		}
		terminate(id)
	}
}

// unsignedDisk is a raw disk holding the Debian guest's boot partition (its first) with
// one file on it stripped of its signature: the partition is read out of the disk
// (qemu-img dd), the file changed in it (mtools, sbattach: every signature), and the
// partition written into a new disk with its MBR entry.
func unsignedDisk(t *testing.T, disk, file string) string {
	t.Helper()
	dir := t.TempDir()
	run := func(argv ...string) {
		t.Helper()
		if out, err := kilntest.Command(t, argv...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	mbr := filepath.Join(dir, "mbr")
	run("qemu-img", "dd", "-f", "qcow2", "-O", "raw", "if="+disk, "of="+mbr, "bs=512", "count=1")
	b, err := os.ReadFile(mbr)
	if err != nil || len(b) != 512 || b[510] != 0x55 || b[511] != 0xaa {
		t.Fatalf("%s has no MBR: %v", disk, err)
	}
	start := binary.LittleEndian.Uint32(b[446+8:])
	sectors := binary.LittleEndian.Uint32(b[446+12:])
	part, loader := filepath.Join(dir, "boot.img"), filepath.Join(dir, "file.efi")
	run("qemu-img", "dd", "-f", "qcow2", "-O", "raw", "if="+disk, "of="+part, "bs=512",
		"skip="+strconv.Itoa(int(start)), "count="+strconv.Itoa(int(sectors)))
	if out, err := kilntest.Command(t, "mcopy", "-i", part, "::"+file, loader).CombinedOutput(); err != nil {
		t.Fatalf("%s has no %s on its boot partition (%v: %s): it was built before the guest had EFI loaders; rebuild it with 'make guest-debian'",
			disk, file, err, bytes.TrimSpace(out))
	}
	// One signature at a time: shim has two (Microsoft's UEFI CA 2011 and 2023).
	for n := 0; ; n++ {
		out, _ := kilntest.Command(t, "sbverify", "--list", loader).CombinedOutput()
		if strings.Contains(string(out), "No signature table") {
			break
		}
		if n == 4 {
			t.Fatalf("%s still has a signature after %d removed:\n%s", file, n, out)
		}
		run("sbattach", "--remove", loader)
	}
	run("mcopy", "-o", "-i", part, loader, "::"+file)
	// The refusals come before the root is read: a disk of the boot partition alone (an
	// MBR naming it, then it) registers in seconds where the whole disk takes a minute.
	out := filepath.Join(dir, "disk.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	table := make([]byte, 512)
	copy(table[:446], b[:446])          // the boot code
	copy(table[446:462], b[446:462])    // the first partition's entry
	table[510], table[511] = 0x55, 0xaa // (the others are empty)
	_, err = f.Write(table)
	if err == nil {
		err = f.Truncate(int64(start+sectors) * 512)
	}
	if err == nil {
		var p []byte
		if p, err = os.ReadFile(part); err == nil {
			_, err = f.WriteAt(p, int64(start)*512)
		}
	}
	if err = errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}
