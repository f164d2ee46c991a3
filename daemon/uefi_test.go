package daemon_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/hypervisor"
	"kiln/internal/kilntest"
)

// uefiUserData runs at every boot of the test guest: it says whether the guest booted
// through UEFI and sees a TPM, and reads a variable of its own through efivarfs,
// writing it when it is not there yet (attributes 7: non-volatile, boot and runtime
// access; efivarfs takes the attributes and the value in one write).
const uefiUserData = `#!/bin/sh
[ -d /sys/firmware/efi ] && echo "KILN-UEFI efi=yes"
[ -e /dev/tpm0 ] && echo "KILN-UEFI tpm0=yes"
v=/sys/firmware/efi/efivars
mount -t efivarfs efivarfs $v || echo "KILN-UEFI efivarfs: mount failed"
f=$v/KilnTest-6b696c6e-7465-7374-8000-000000000017
if [ -e $f ]; then
	echo "KILN-UEFI var=$(tail -c +5 $f)"
else
	echo "KILN-UEFI var=none"
	printf '\007\000\000\000kiln-17' > $f || echo "KILN-UEFI var: write failed"
fi
`

// TestUEFI boots the test guest under OVMF through the kernel's EFI stub: an image
// of boot mode uefi-preferred with a TPM boots UEFI (EDK II on its console,
// /sys/firmware/efi, /dev/tpm0 with swtpm beside QEMU); a variable the guest sets is
// kept across a stop and start and goes into an image made of the instance, whose
// instances start with it; the instance's variables and TPM state go with it.
func TestUEFI(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	k := newKilnd(t)
	t.Cleanup(k.KillQEMUs)
	ctx := ctxT(t)
	g := kilntest.GuestFiles(t)
	register := func(req api.RegisterImageRequest) (api.Image, error) {
		req.Disks = []api.Disk{{Name: g.Disk, Format: "qcow2"}}
		if req.Kernel == "" {
			req.Kernel, req.Initrd, req.Cmdline = g.Kernel, g.Initrd, g.Cmdline
		}
		im, err := k.RegisterImage(ctx, req)
		if err != nil {
			return im, err
		}
		return k.WaitImage(guestCtx(t), im.ID, nil)
	}

	// Refused, and nothing stored: UEFI options on a BIOS image, an unknown TPM, a
	// variable store that is not OVMF's, Secure Boot of a kernel OVMF would not verify.
	short := filepath.Join(t.TempDir(), "vars.fd")
	os.WriteFile(short, []byte("not a flash image"), 0o644)
	for _, bad := range []api.RegisterImageRequest{
		{Name: "bios-tpm", BootMode: "legacy-bios", TPMSupport: "v2.0"},
		{Name: "bios-sb", SecureBoot: true},
		{Name: "tpm-v1", BootMode: "uefi", TPMSupport: "v1.2"},
		{Name: "short-vars", BootMode: "uefi", UEFIData: short},
		{Name: "sb-kernel", BootMode: "uefi", SecureBoot: true},
	} {
		if im, err := register(bad); !isCode(err, api.CodeInvalidParameterValue) {
			t.Errorf("register %s: %+v, %v; want %s", bad.Name, im, err, api.CodeInvalidParameterValue)
		}
	}
	if list, err := k.Images(ctx, client.ListImagesOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("refused registrations left images: %+v, %v", list, err)
	}

	im, err := register(api.RegisterImageRequest{Name: "uefi-guest", BootMode: "uefi-preferred", TPMSupport: "v2.0"})
	if err != nil {
		t.Fatal(err)
	}
	if im.BootMode != "uefi-preferred" || im.TPMSupport != "v2.0" || im.UEFIData != "" {
		t.Fatalf("registered: %+v", im)
	}
	a := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano", UserData: []byte(uefiUserData)})
	if a.BootMode != "uefi" || !a.TPM || a.SecureBoot {
		t.Fatalf("an instance of a uefi-preferred image with a TPM: boot mode %q, TPM %v, Secure Boot %v", a.BootMode, a.TPM, a.SecureBoot)
	}
	dir := filepath.Join(k.Root, "instances", a.ID)
	waitState(t, k, a.ID, "ready")
	con := console(t, k, a.ID)
	for _, want := range []string{"by EDK II", "KILN-UEFI efi=yes", "KILN-UEFI tpm0=yes", "KILN-UEFI var=none"} {
		if !strings.Contains(con, want) {
			t.Errorf("first boot: the console lacks %q\n%s", want, kilntest.Tail(con, 40))
		}
	}
	swtpm := pidIn(t, filepath.Join(dir, hypervisor.TPMPID))
	if !alive(swtpm, "swtpm") {
		t.Errorf("swtpm %d of the running instance is not running", swtpm)
	}
	template, _ := os.ReadFile(hypervisor.VarsTemplate(false))

	// Stop and start: the variable and the TPM's state are still there; swtpm went
	// with QEMU and came back with it.
	if _, err := k.InstanceAction(ctx, a.ID, "stop", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, a.ID, "stopped")
	for deadline := time.Now().Add(5 * time.Second); alive(swtpm, "swtpm"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) { // it ends when QEMU closes its data channel
			t.Errorf("swtpm %d outlived its stopped instance by 5 s", swtpm)
			break
		}
	}
	if vars, err := os.ReadFile(filepath.Join(dir, hypervisor.VarsFile)); err != nil || string(vars) == string(template) {
		t.Errorf("the stopped instance's variable store: %v (unchanged from the template: %v)", err, string(vars) == string(template))
	}
	if _, err := os.Stat(filepath.Join(dir, hypervisor.TPMDir, "tpm2-00.permall")); err != nil {
		t.Errorf("the TPM's state: %v", err)
	}
	if _, err := k.InstanceAction(ctx, a.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, k, a.ID, "KILN-UEFI var=kiln-17", 1)
	waitState(t, k, a.ID, "ready")
	if con := console(t, k, a.ID); strings.Count(con, "KILN-UEFI tpm0=yes") != 2 {
		t.Errorf("second boot: no TPM\n%s", kilntest.Tail(con, 30))
	}

	// An image of the stopped instance carries its variables (EC2's UEFI data).
	if _, err := k.InstanceAction(ctx, a.ID, "stop", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, a.ID, "stopped")
	made, err := k.CreateImage(ctx, a.ID, api.CreateImageRequest{Name: "uefi-made"})
	if err != nil {
		t.Fatal(err)
	}
	if made, err = k.WaitImage(guestCtx(t), made.ID, nil); err != nil {
		t.Fatal(err)
	}
	if made.BootMode != "uefi-preferred" || made.TPMSupport != "v2.0" || made.UEFIData == "" {
		t.Fatalf("image of a UEFI instance: boot mode %q, TPM %q, UEFI data %q", made.BootMode, made.TPMSupport, made.UEFIData)
	}
	b := runOne(t, k, api.RunInstancesRequest{Image: made.ID, InstanceType: "nano", UserData: []byte(uefiUserData)})
	waitState(t, k, b.ID, "ready")
	if con := console(t, k, b.ID); !strings.Contains(con, "KILN-UEFI var=kiln-17") || strings.Contains(con, "var=none") {
		t.Errorf("an instance of the image made of it does not start with its variable:\n%s", kilntest.Tail(con, 30))
	}

	// Terminated, the instance's variables and TPM state are gone.
	if _, err := k.InstanceAction(ctx, a.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, a.ID, "terminated")
	for _, f := range []string{hypervisor.VarsFile, hypervisor.TPMDir} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s of the terminated instance: %v", f, err)
		}
	}
}

// pidIn reads a pid file.
func pidIn(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// alive reports whether pid is a live process whose command line has name in it.
func alive(pid int, name string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), name) {
		return false
	}
	stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}
