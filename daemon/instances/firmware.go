package instances

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"kiln/hypervisor"
	"kiln/images"
)

// bootMode is the mode an instance of im boots with: legacy-bios or uefi. An image's
// uefi-preferred boots UEFI when OVMF is installed, as EC2 boots it on an instance type
// that has UEFI, and legacy BIOS otherwise; uefi without OVMF, or a TPM without swtpm,
// is refused, saying what to install.
func bootMode(im *images.Image) (string, error) {
	switch {
	case !images.UEFI(im.BootMode):
		return "legacy-bios", nil
	case im.BootMode == "uefi-preferred" && !im.SecureBoot && im.TPMSupport == "" && hypervisor.FirmwareAvailable(false) != nil:
		return "legacy-bios", nil
	}
	if err := hypervisor.FirmwareAvailable(im.SecureBoot); err != nil {
		return "", fmt.Errorf("image %s boots UEFI: %v: %w", im.ID, err, errdefs.ErrFailedPrecondition)
	}
	if im.TPMSupport != "" {
		if err := hypervisor.TPMAvailable(); err != nil {
			return "", fmt.Errorf("image %s has TPM support %s: %v: %w", im.ID, im.TPMSupport, err, errdefs.ErrFailedPrecondition)
		}
	}
	return "uefi", nil
}

// makeFirmwareFiles makes a UEFI instance's own machine state in its directory: the
// variable store, from its image's UEFI data or else the firmware's template (with
// Microsoft's keys for Secure Boot), and the TPM's state directory when it has one.
// Both are kept across stops and starts and go with the instance.
func (m *Manager) makeFirmwareFiles(dir string, im *images.Image, tpm bool) error {
	src := hypervisor.VarsTemplate(im.SecureBoot)
	if im.UEFIData != "" {
		src = m.Store.BlobPath(im.UEFIData)
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("UEFI variables of image %s: %w", im.ID, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && im.UEFIData != "" { // pulled from a registry: checked for size only
		if err := hypervisor.CheckVars(f, st.Size()); err != nil {
			return fmt.Errorf("the UEFI data of image %s: %v: %w", im.ID, err, errdefs.ErrFailedPrecondition)
		}
		if im.SecureBoot && !hypervisor.HasPlatformKey(f, st.Size()) {
			return fmt.Errorf("the UEFI data of image %s has no platform key: its Secure Boot would check nothing: %w", im.ID, errdefs.ErrFailedPrecondition)
		}
	}
	if err := hypervisor.WriteVars(filepath.Join(dir, hypervisor.VarsFile), f); err != nil {
		return err
	}
	if tpm {
		return os.Mkdir(filepath.Join(dir, hypervisor.TPMDir), 0o700)
	}
	return nil
}

// removeFirmwareFiles deletes a terminated instance's variable store and TPM state
// (and ends its swtpm, should one have outlived its QEMU).
func removeFirmwareFiles(dir string) {
	hypervisor.StopTPM(dir)
	os.Remove(filepath.Join(dir, hypervisor.VarsFile))
	os.RemoveAll(filepath.Join(dir, hypervisor.TPMDir))
}
