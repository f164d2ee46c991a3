package kilntest

import (
	"path/filepath"
	"strings"
	"testing"
)

// Disks makes, in a new directory (removed when the test ends), the disk files the
// tests give kiln, with qemu-img and qemu-io (missing, it fails under CI and is skipped
// elsewhere), and returns the directory:
//
//   - good.qcow2: 64 MiB, 2 MiB of 0x5a from 1 MiB; good.vmdk and good.vhdx, the same
//     converted; random.raw: 4 MiB of random bytes; big.qcow2: 64 MiB, 16 MiB written.
//   - Files kiln must refuse: backed.qcow2 (backed by /etc/passwd), datafile.qcow2 (its
//     data in ext.raw), luks.qcow2 (encrypted), truncated.qcow2 (big.qcow2 cut at 1 MB),
//     flat.vmdk (a VMDK descriptor naming as its extent host-secret.raw by its absolute
//     path: a file of the host the caller never passed; qemu-img would write a relative
//     name, but the descriptor is text).
func Disks(t testing.TB) string {
	t.Helper()
	Need(t, "qemu-img")
	Need(t, "qemu-io")
	d := t.TempDir()
	run := func(argv ...string) {
		t.Helper()
		for try := 1; ; try++ {
			cmd := Command(t, argv...)
			cmd.Dir = d
			out, err := cmd.CombinedOutput()
			// qemu-img times LUKS's key derivation by the thread's CPU time, which can
			// read 0 ms for a short first round (tick accounting): it then says "Unable
			// to get accurate CPU usage". Another try measures again.
			if err == nil || try == 5 || !strings.Contains(string(out), "Unable to get accurate CPU usage") {
				if err != nil {
					t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
				}
				return
			}
		}
	}
	run("qemu-img", "create", "-q", "-f", "qcow2", "good.qcow2", "64M")
	run("qemu-io", "-c", "write -P 0x5a 1M 2M", "good.qcow2")
	run("qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "good.qcow2", "good.vmdk")
	run("qemu-img", "convert", "-f", "qcow2", "-O", "vhdx", "good.qcow2", "good.vhdx")
	run("sh", "-c", "head -c 4194304 /dev/urandom > random.raw")
	run("qemu-img", "create", "-q", "-f", "qcow2", "big.qcow2", "64M")
	run("qemu-io", "-c", "write -P 1 0 16M", "big.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", "backed.qcow2")
	run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(d, "ext.raw"), "datafile.qcow2", "16M")
	run("qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o", "encrypt.format=luks,encrypt.key-secret=s0", "luks.qcow2", "16M")
	run("sh", "-c", "head -c 1000000 big.qcow2 > truncated.qcow2")
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "flat.vmdk", "8M")
	run("sh", "-c", "head -c 8388608 /dev/urandom > host-secret.raw")
	run("sed", "-i", `s|"flat-flat.vmdk"|"`+filepath.Join(d, "host-secret.raw")+`"|`, "flat.vmdk")
	return d
}
