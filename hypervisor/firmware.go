package hypervisor

import (
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
	code := OVMFCode
	vars := OVMFVars
	if secureBoot {
		code, vars = OVMFCodeSecure, OVMFVarsMicrosoft
	}
	for _, f := range []string{code, vars} {
		if _, err := os.Stat(filepath.Join(OVMFDir, f)); err != nil {
			return fmt.Errorf("UEFI firmware %s is missing (install the ovmf package): %w", f, err)
		}
	}
	return nil
}

// OpenCode opens OVMF's code for a machine (the secboot build for Secure Boot).
func OpenCode(secureBoot bool) (*os.File, error) {
	name := OVMFCode
	if secureBoot {
		name = OVMFCodeSecure
	}
	f, err := os.Open(filepath.Join(OVMFDir, name))
	if err != nil {
		return nil, fmt.Errorf("UEFI firmware (install the ovmf package): %w", err)
	}
	return f, nil
}

// VarsTemplate is the template of a new machine's variable store when its image brings
// none: with Secure Boot, the one with Microsoft's keys enrolled (what a cloud's UEFI
// instance starts with); without, the empty one.
func VarsTemplate(secureBoot bool) string {
	if secureBoot {
		return filepath.Join(OVMFDir, OVMFVarsMicrosoft)
	}
	return filepath.Join(OVMFDir, OVMFVars)
}

// WriteVars makes a machine's variable store at path from src (a template, an image's
// UEFI data), atomically and mode 0600. The store must be a whole flash image: its
// size that of OVMF's (checked against the installed template), so that QEMU maps it.
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
		err = CheckVarsSize(n)
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
