package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFirmwareArgs: a UEFI machine gets OVMF's code and its own variable store as
// flash through fd sets (the store also read-only, for QEMU's reopen), Secure Boot the
// SMM machine with secure flash, a TPM swtpm's socket; a BIOS machine none of them.
func TestFirmwareArgs(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) *os.File {
		return openFiles(t, writeFile(t, filepath.Join(dir, name)))[0]
	}
	passed := func() *Passed {
		p := &Passed{console: f("console"), consoleSock: f("consolesock"), qmp: f("qmp"), agent: f("agent"), tpm: f("tpm")}
		t.Cleanup(p.Close)
		return p
	}
	user := User{UID: 2_000_000_001, GID: 2_000_000_001}
	base := Spec{Dir: "/d/i-1", Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Kernel: f("k"), Initrd: f("i")}
	for _, c := range []struct {
		name    string
		fw      *Firmware
		tpm     bool
		want    []string
		wantNot []string
	}{
		{"bios", nil, false, []string{"-machine q35,accel=tcg -cpu"}, []string{"pflash", "fwcode", "tpm", "smm"}},
		{"uefi", &Firmware{}, false, []string{
			"-machine q35,accel=tcg,pflash0=fwcode,pflash1=fwvars -cpu",
			`-add-fd fd=3,set=1,opaque=fwcode -blockdev {"driver":"file","filename":"/dev/fdset/1","node-name":"fwcode-f","read-only":true}`,
			`{"driver":"raw","file":"fwcode-f","node-name":"fwcode","read-only":true}`,
			`-add-fd fd=4,set=2,opaque=fwvars -add-fd fd=5,set=2,opaque=fwvars -blockdev {"driver":"file","filename":"/dev/fdset/2","node-name":"fwvars-f","read-only":false}`,
		}, []string{"smm", "secure", "tpm"}},
		{"secure boot and TPM", &Firmware{SecureBoot: true}, true, []string{
			"-machine q35,accel=tcg,pflash0=fwcode,pflash1=fwvars,smm=on -cpu",
			"-global driver=cfi.pflash01,property=secure,value=on",
			"-chardev socket,id=tpm,fd=", "-tpmdev emulator,id=tpm0,chardev=tpm -device tpm-crb,tpmdev=tpm0",
		}, nil},
	} {
		spec := base
		if c.fw != nil {
			fw := *c.fw
			fw.Code, fw.Vars = f("code"), f("vars")
			spec.Firmware = &fw
		}
		if c.tpm {
			spec.TPM = &TPM{State: f("state")}
		}
		args, err := spec.Args(passed())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		line := strings.Join(args, " ")
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: argv lacks %s\n%s", c.name, w, line)
			}
		}
		for _, w := range c.wantNot {
			if strings.Contains(line, w) {
				t.Errorf("%s: argv has %s\n%s", c.name, w, line)
			}
		}
	}
	tpmOnly := base
	tpmOnly.TPM = &TPM{State: f("state2")}
	if _, err := tpmOnly.Args(passed()); err == nil {
		t.Error("a TPM without UEFI firmware was accepted")
	}
}
