package instances

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/hypervisor"
	"kiln/images"
	"kiln/internal/kilntest"
)

// TestBootModeNeedsSwtpm: an image that asks for a TPM is refused at launch, as one
// of boot mode uefi is without OVMF, when swtpm is not installed: IncorrectState
// naming the package, not an internal error from a failed exec after the instance
// was made.
func TestBootModeNeedsSwtpm(t *testing.T) {
	if err := hypervisor.FirmwareAvailable(false); err != nil {
		kilntest.Missing(t, "OVMF (make deps installs ovmf): %v", err)
	}
	im := &images.Image{ID: "ami-1", Config: images.Config{BootMode: "uefi-preferred", TPMSupport: images.TPMSupportV2}}
	if mode, err := bootMode(im); err != nil || mode != "uefi" {
		t.Fatalf("with swtpm installed: %q, %v", mode, err)
	}
	t.Setenv("PATH", t.TempDir()) // no swtpm
	_, err := bootMode(im)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "swtpm") {
		t.Errorf("without swtpm: %v; want a failed precondition naming swtpm", err)
	}
	im.TPMSupport = ""
	if mode, err := bootMode(im); err != nil || mode != "uefi" {
		t.Errorf("without swtpm, an image without a TPM: %q, %v", mode, err)
	}
}
