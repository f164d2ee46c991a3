package hypervisor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// OVMF, Debian's build of EDK II for QEMU (package ovmf): the code of a UEFI machine
// (read-only flash) and the templates of its variable store (writable flash, one copy
// per machine). The secboot code runs its variable services in SMM, so that a guest
// cannot write the store behind the firmware's back: Secure Boot needs it.
const (
	OVMFDir           = "/usr/share/OVMF"
	OVMFCode          = "OVMF_CODE_4M.fd"
	OVMFCodeSecure    = "OVMF_CODE_4M.secboot.fd"
	OVMFVars          = "OVMF_VARS_4M.fd"    // no keys enrolled: Secure Boot off
	OVMFVarsMicrosoft = "OVMF_VARS_4M.ms.fd" // Microsoft's KEK and db, Secure Boot on
)

// MaxVarsSize bounds a variable store kilnd takes (from a caller, an image): OVMF's 4M
// build has a 528 KiB store.
const MaxVarsSize = 4 << 20

// VarsFile is the instance's own UEFI variable store, made from a template at launch,
// and TPMDir its virtual TPM's state (swtpm's files): both kept in the instance
// directory for the instance's life.
const (
	VarsFile = "uefi-vars.fd"
	TPMDir   = "tpm"
	TPMPID   = "swtpm.pid" // written by kilnd once swtpm is started
	TPMLog   = "swtpm.log" // swtpm's own log
)

// Firmware is a UEFI machine's flash: OVMF's code and the machine's own variable
// store, both open (the code read-only, the store read-write; QEMU gets descriptors).
// SecureBoot selects the SMM machine that Secure Boot needs; Code must then be the
// secboot build. The caller closes the files once Start returns.
type Firmware struct {
	Code, Vars *os.File
	SecureBoot bool
}

// TPM is a machine's virtual TPM 2.0: a swtpm process started beside QEMU with State
// (its state directory, open) and connected to QEMU by a socket pair, so that no name
// of kiln's is on either command line and swtpm ends when QEMU closes its end.
type TPM struct {
	State  *os.File // the state directory; swtpm's user must own it
	Binary string   // swtpm; default "swtpm"
}

// FirmwareAvailable reports whether OVMF is installed (the ovmf package), and what is
// missing when not.
func FirmwareAvailable(secureBoot bool) error {
	code, vars := ovmfFiles(secureBoot)
	for _, f := range []string{code, vars} {
		if _, err := os.Stat(filepath.Join(OVMFDir, f)); err != nil {
			return fmt.Errorf("UEFI firmware %s is missing (install the ovmf package): %w", f, err)
		}
	}
	return nil
}

// ovmfFiles are the names of OVMF's code and variable template in OVMFDir: the secboot
// build and the store with Microsoft's keys for Secure Boot, else the plain ones.
func ovmfFiles(secureBoot bool) (code, vars string) {
	if secureBoot {
		return OVMFCodeSecure, OVMFVarsMicrosoft
	}
	return OVMFCode, OVMFVars
}

// OpenCode opens OVMF's code for a machine (the secboot build for Secure Boot).
func OpenCode(secureBoot bool) (*os.File, error) {
	code, _ := ovmfFiles(secureBoot)
	f, err := os.Open(filepath.Join(OVMFDir, code))
	if err != nil {
		return nil, fmt.Errorf("UEFI firmware (install the ovmf package): %w", err)
	}
	return f, nil
}

// VarsTemplate is the template of a new machine's variable store when its image brings
// none: with Secure Boot, the one with Microsoft's keys enrolled (what a cloud's UEFI
// instance starts with); without, the empty one.
func VarsTemplate(secureBoot bool) string {
	_, vars := ovmfFiles(secureBoot)
	return filepath.Join(OVMFDir, vars)
}

// WriteVars makes a machine's variable store at path from src (a template, an image's
// UEFI data), atomically and mode 0600. The store must be a whole OVMF store
// (CheckVars): its size that of the installed template's, so that QEMU maps it.
func WriteVars(path string, src io.Reader) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(src, MaxVarsSize+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkVarsFile(tmp, n)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("UEFI variable store %s: %w", path, err)
	}
	return nil
}

// checkVarsFile checks the variable store of n bytes at path (CheckVars).
func checkVarsFile(path string, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return CheckVars(f, n)
}

// CheckVars checks that r, of size bytes, is an OVMF variable store: the installed
// template's size (CheckVarsSize), and a firmware volume of that length holding
// variables (EFI_SYSTEM_NV_DATA_FV_GUID, "_FVH", then an authenticated or plain
// variable store header). OVMF runs on a store that is not one (zeros, any file of the
// size) with variables in memory only: they would be lost at each stop, and with Secure
// Boot its keys would not be there.
func CheckVars(r io.ReaderAt, size int64) error {
	if err := CheckVarsSize(size); err != nil {
		return err
	}
	var h [0x58]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("a UEFI variable store: %w", err)
	}
	hdrLen := int(binary.LittleEndian.Uint16(h[0x30:]))
	ok := bytes.Equal(h[0x10:0x20], nvDataFVGUID) && string(h[0x28:0x2c]) == "_FVH" &&
		binary.LittleEndian.Uint64(h[0x20:]) == uint64(size) && hdrLen >= 0x48 && hdrLen+16 <= len(h)
	if ok {
		store := h[hdrLen : hdrLen+16]
		ok = bytes.Equal(store, authVariableGUID) || bytes.Equal(store, variableGUID)
	}
	if !ok {
		return fmt.Errorf("not an OVMF variable store (no firmware volume of variables at its start, as %s has)", OVMFVars)
	}
	return nil
}

// The GUIDs (as stored, little-endian) of a firmware volume of non-volatile data and of
// the variable store in it (EDK II's gEfiSystemNvDataFvGuid, gEfiAuthenticatedVariableGuid,
// gEfiVariableGuid).
var (
	nvDataFVGUID     = []byte{0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50}
	authVariableGUID = []byte{0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92}
	variableGUID     = []byte{0x16, 0x36, 0xcf, 0xdd, 0x75, 0x32, 0x64, 0x41, 0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d}
)

// CheckVarsSize checks that a variable store of n bytes fits OVMF's flash (the size of
// its installed template).
func CheckVarsSize(n int64) error {
	st, err := os.Stat(filepath.Join(OVMFDir, OVMFVars))
	if err != nil {
		return fmt.Errorf("UEFI firmware (install the ovmf package): %w", err)
	}
	if n != st.Size() {
		return fmt.Errorf("a UEFI variable store of %d bytes; OVMF's is %d bytes (%s)", n, st.Size(), OVMFVars)
	}
	return nil
}

// firmwareArgs are the flash's block nodes (through fd sets) and the -machine options
// naming them.
func (f *Firmware) firmwareArgs(p *Passed) (args []string, machine string, err error) {
	if f.Code == nil || f.Vars == nil {
		return nil, "", errors.New("UEFI firmware: its code and variable store are not open")
	}
	ro, err := reopenReadOnly(f.Vars)
	if err != nil {
		return nil, "", err
	}
	defer ro.Close()
	for _, n := range []struct {
		node     string
		f, ro    *os.File
		readOnly bool
	}{{"fwcode", f.Code, nil, true}, {"fwvars", f.Vars, ro, false}} {
		a, name, err := p.fdset(n.f, n.ro, n.node)
		if err != nil {
			return nil, "", err
		}
		args = append(args, a...)
		for _, node := range []map[string]any{
			{"driver": "file", "node-name": n.node + "-f", "filename": name, "read-only": n.readOnly},
			{"driver": "raw", "node-name": n.node, "file": n.node + "-f", "read-only": n.readOnly},
		} {
			b, _ := json.Marshal(node)
			args = append(args, "-blockdev", string(b))
		}
	}
	machine = ",pflash0=fwcode,pflash1=fwvars"
	if f.SecureBoot {
		// The variable store is writable only from SMM: the guest's kernel cannot
		// enroll keys behind the firmware's back.
		machine += ",smm=on"
		args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	return args, machine, nil
}

// HasPlatformKey reports whether a variable store (CheckVars') holds a platform key:
// without one OVMF stays in setup mode and Secure Boot checks nothing. It walks the
// authenticated variables after the store's header for a live PK of EFI's global GUID.
func HasPlatformKey(r io.ReaderAt, size int64) bool {
	if CheckVars(r, size) != nil {
		return false
	}
	b := make([]byte, size)
	if _, err := r.ReadAt(b, 0); err != nil {
		return false
	}
	const varHeader, storeHeader = 60, 28
	off := int(binary.LittleEndian.Uint16(b[0x30:])) + storeHeader
	pk := []byte{'P', 0, 'K', 0, 0, 0}
	for off+varHeader <= len(b) && binary.LittleEndian.Uint16(b[off:]) == 0x55aa {
		state := b[off+2]
		nameSize := int(binary.LittleEndian.Uint32(b[off+36:]))
		dataSize := int(binary.LittleEndian.Uint32(b[off+40:]))
		guid := b[off+44 : off+60]
		if nameSize < 0 || dataSize < 0 || off+varHeader+nameSize+dataSize > len(b) {
			return false
		}
		name := b[off+varHeader : off+varHeader+nameSize]
		// EDK II's VAR_ADDED, also while in deleted transition.
		if (state == 0x3f || state == 0x3e) && bytes.Equal(name, pk) && bytes.Equal(guid, globalVariableGUID) && dataSize > 0 {
			return true
		}
		off = (off + varHeader + nameSize + dataSize + 3) &^ 3
	}
	return false
}

// globalVariableGUID is EFI_GLOBAL_VARIABLE (8be4df61-93ca-11d2-aa0d-00e098032b8c) as stored.
var globalVariableGUID = []byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c}
