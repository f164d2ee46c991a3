package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/hypervisor"
	"kiln/internal/kilntest"
)

// TestUEFIDataRefused: register takes as --uefi-data only an OVMF variable store. A
// file of the right size that is not one (zeros: OVMF would run on a volatile store
// in memory, so that the image's variables, and with --secure-boot its keys, are not
// there), one far too big (sparse), a character device and a directory are refused
// as invalid, and nothing is stored; OVMF's own template is taken.
// No guest boots.
func TestUEFIDataRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kilnd")
	}
	if err := hypervisor.FirmwareAvailable(false); err != nil {
		kilntest.Missing(t, "OVMF (make deps installs ovmf): %v", err)
	}
	g := kilntest.GuestFiles(t)
	k := newKilnd(t)
	ctx := ctxT(t)
	dir := t.TempDir()
	st, err := os.Stat(hypervisor.VarsTemplate(false))
	if err != nil {
		t.Fatal(err)
	}
	zeros, huge := filepath.Join(dir, "zeros.fd"), filepath.Join(dir, "huge.fd")
	if err := os.WriteFile(zeros, make([]byte, st.Size()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(huge, nil, 0o644); err != nil || os.Truncate(huge, 8<<30) != nil {
		t.Fatal("make a sparse 8 GiB file")
	}
	register := func(name, data string) (api.Image, error) {
		return k.RegisterImage(ctx, api.RegisterImageRequest{Name: name, BootMode: "uefi", UEFIData: data,
			Disks: []api.Disk{{Name: g.Disk, Format: "qcow2"}}, Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: g.Cmdline})
	}
	for _, bad := range []struct{ name, file string }{
		{"zeros", zeros}, {"huge", huge}, {"device", "/dev/zero"}, {"directory", dir},
	} {
		// (The client refuses the device and the directory before it asks.)
		if im, err := register(bad.name, bad.file); !isCode(err, api.CodeInvalidParameterValue) && !errdefs.IsInvalidArgument(err) {
			t.Errorf("--uefi-data %s: %+v, %v; want %s", bad.name, im, err, api.CodeInvalidParameterValue)
		}
	}
	// Secure Boot over a store without a platform key would check nothing.
	_, err = k.RegisterImage(ctx, api.RegisterImageRequest{Name: "keyless", BootMode: "uefi", SecureBoot: true,
		UEFIData: hypervisor.VarsTemplate(false), Disks: []api.Disk{{Name: g.Disk, Format: "qcow2"}}})
	if !isCode(err, api.CodeInvalidParameterValue) || !strings.Contains(err.Error(), "platform key") {
		t.Errorf("--secure-boot with a store without keys: %v; want %s naming the platform key", err, api.CodeInvalidParameterValue)
	}
	if list, err := k.Images(ctx, client.ListImagesOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("refused registrations left images: %+v, %v", list, err)
	}
	im, err := register("template", hypervisor.VarsTemplate(true))
	if err != nil {
		t.Fatal(err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil || im.UEFIData == "" {
		t.Fatalf("register with OVMF's template: %+v, %v", im, err)
	}
}
