package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) *os.File {
		return openFiles(t, writeFile(t, filepath.Join(dir, name)))[0]
	}
	passed := func() *Passed {
		p := &Passed{console: f("console"), consoleSock: f("consolesock"), qmp: f("qmp"), agent: f("agent")}
		t.Cleanup(p.Close)
		return p
	}
	user := User{UID: 2_000_000_001, GID: 2_000_000_001}
	spec := Spec{
		Dir: "/var/lib/kiln/instances/i-0123456789abcdef0", Accel: AccelTCG, CPUs: 2, MemoryMiB: 512, User: user,
		Kernel: f("k"), Initrd: f("i"), Cmdline: "console=ttyS0 root=/dev/vda",
		Disks: []Disk{
			{ID: "vda", Files: []*os.File{f("base"), f("delta"), f("top")}},
			{ID: "seed", Files: []*os.File{f("seed")}, Format: "raw", ReadOnly: true},
		},
		Net: &Net{MAC: "52:54:00:0a:0b:0c", Forwards: []Forward{
			{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: 42200, GuestPort: 22},
			{Protocol: "udp", HostIP: "0.0.0.0", HostPort: 5353, GuestPort: 53},
		}},
	}
	p := passed()
	args, err := spec.Args(p)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-name guest=i-0123456789abcdef0,", "-machine q35,accel=tcg", "-cpu max", "-smp 2", "-m 512", "-nodefaults",
		"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-add-fd fd=3,set=1,opaque=console -chardev socket,id=console,server=on,wait=off,fd=4,logfile=/dev/fdset/1,logappend=on -serial chardev:console",
		"-chardev socket,id=qmp,server=on,wait=off,fd=5 -mon chardev=qmp,mode=control",
		"-chardev socket,id=agent,server=on,wait=off,fd=6 -device virtio-serial-pci,id=serial0 -device virtserialport,bus=serial0.0,chardev=agent,name=org.qemu.guest_agent.0",
		"-kernel /proc/self/fd/7 -initrd /proc/self/fd/8 -append console=ttyS0 root=/dev/vda",
		"-add-fd fd=9,set=2,opaque=vda-f0",
		"-add-fd fd=11,set=4,opaque=vda-f2 -add-fd fd=12,set=4,opaque=vda-f2", // the top: read-write and read-only
		`{"driver":"file","filename":"/dev/fdset/2","node-name":"vda-f0","read-only":true}`,
		`{"backing":null,"driver":"qcow2","file":"vda-f0","node-name":"vda-0","read-only":true}`,
		`{"backing":"vda-0","driver":"qcow2","file":"vda-f1","node-name":"vda-1","read-only":true}`,
		`{"driver":"file","filename":"/dev/fdset/4","node-name":"vda-f2","read-only":false}`,
		`{"backing":"vda-1","driver":"qcow2","file":"vda-f2","node-name":"vda-2","read-only":false}`,
		"-device virtio-blk-pci,drive=vda-2,id=vda",
		`{"driver":"raw","file":"seed-f0","node-name":"seed-0","read-only":true}`,
		"-device virtio-blk-pci,drive=seed-0,id=seed",
		"-device pvpanic-pci,bus=pcie.0 -action panic=pause",
		"-netdev user,id=net0,restrict=on,ipv6=off,net=169.254.169.0/24,host=169.254.169.254,dns=169.254.169.253,dhcpstart=169.254.169.15,hostfwd=tcp:127.0.0.1:42200-:22,hostfwd=udp:0.0.0.0:5353-:53 -device virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:0a:0b:0c",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("argv lacks %s\n%s", want, line)
		}
	}
	if strings.Contains(line, "bootindex") || strings.Contains(line, dir) || strings.Contains(line, "/var/lib") {
		t.Errorf("a direct kernel boot has a boot index, or the command line names a file:\n%s", line)
	}
	if len(p.files) != 11 {
		t.Errorf("passed %d descriptors, want 11", len(p.files))
	}

	spec.Net.Outbound = true
	args, _ = spec.Args(passed())
	if line := strings.Join(args, " "); !strings.Contains(line, "-netdev user,id=net0,restrict=off,") {
		t.Errorf("outbound: %s", line)
	}

	kvm := Spec{Dir: "/d", Accel: AccelKVM, CPUs: 1, MemoryMiB: 256, User: user, Disks: []Disk{{ID: "vda", Files: []*os.File{f("a")}}}}
	args, _ = kvm.Args(passed())
	if line := strings.Join(args, " "); !strings.Contains(line, "-cpu host") || !strings.Contains(line, "bootindex=0") {
		t.Errorf("kvm, no kernel: %s", line)
	}

	a := f("a")
	for _, bad := range []Spec{
		{Accel: "xen", CPUs: 1, MemoryMiB: 256, User: user},
		{Accel: AccelTCG, CPUs: 0, MemoryMiB: 256, User: user},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256},                              // root
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Initrd: f("i2")}, // an initrd alone
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Disks: []Disk{{ID: "VDA", Files: []*os.File{a}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Disks: []Disk{{ID: "vda", Files: []*os.File{nil}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Disks: []Disk{{ID: "vda"}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Disks: []Disk{{ID: "vda", Format: "raw", Files: []*os.File{a, a}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Net: &Net{MAC: "52:54:00:0a:0b"}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Net: &Net{MAC: "52:54:00:0a:0b:0c", Forwards: []Forward{{Protocol: "sctp", HostIP: "127.0.0.1", HostPort: 1, GuestPort: 1}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Net: &Net{MAC: "52:54:00:0a:0b:0c", Forwards: []Forward{{Protocol: "tcp", HostIP: "::1", HostPort: 1, GuestPort: 1}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, User: user, Net: &Net{MAC: "52:54:00:0a:0b:0c", Forwards: []Forward{{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: 70000, GuestPort: 1}}}},
	} {
		if _, err := bad.Args(passed()); err == nil {
			t.Errorf("Args accepted %+v", bad)
		}
	}
}

// writeFile makes a small file at path and returns path.
func writeFile(t *testing.T, path string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
