package hypervisor

import (
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	spec := Spec{
		Name: "i-0123456789abcdef0", Dir: "/var/lib/kiln/instances/i-0123456789abcdef0", Accel: AccelTCG, CPUs: 2, MemoryMiB: 512,
		Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 root=/dev/vda",
		Disks: []Disk{
			{ID: "vda", Chain: []string{"/c/base", "/c/delta", "/inst/vda.qcow2"}},
			{ID: "seed", Chain: []string{"/inst/seed.iso"}, Format: "raw", ReadOnly: true},
		},
	}
	args, err := spec.Args()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-machine q35,accel=tcg", "-cpu max", "-smp 2", "-m 512", "-nodefaults",
		"-chardev file,id=console,append=on,path=/var/lib/kiln/instances/i-0123456789abcdef0/console.log -serial chardev:console",
		"-qmp unix:/var/lib/kiln/instances/i-0123456789abcdef0/qmp.sock,server=on,wait=off",
		"-kernel /k -initrd /i -append console=ttyS0 root=/dev/vda",
		`{"driver":"file","filename":"/c/base","node-name":"vda-f0","read-only":true}`,
		`{"backing":null,"driver":"qcow2","file":"vda-f0","node-name":"vda-0","read-only":true}`,
		`{"backing":"vda-0","driver":"qcow2","file":"vda-f1","node-name":"vda-1","read-only":true}`,
		`{"backing":"vda-1","driver":"qcow2","file":"vda-f2","node-name":"vda-2","read-only":false}`,
		"-device virtio-blk-pci,drive=vda-2,id=vda",
		`{"driver":"raw","file":"seed-f0","node-name":"seed-0","read-only":true}`,
		"-device virtio-blk-pci,drive=seed-0,id=seed",
		"-device pvpanic-pci,bus=pcie.0 -action panic=pause",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("argv lacks %s\n%s", want, line)
		}
	}
	if strings.Contains(line, "bootindex") {
		t.Error("a direct kernel boot has a boot index")
	}

	kvm := Spec{Name: "x", Dir: "/d", Accel: AccelKVM, CPUs: 1, MemoryMiB: 256, Disks: []Disk{{ID: "vda", Chain: []string{"/a"}}}}
	args, _ = kvm.Args()
	if line := strings.Join(args, " "); !strings.Contains(line, "-cpu host") || !strings.Contains(line, "bootindex=0") {
		t.Errorf("kvm, no kernel: %s", line)
	}

	for _, bad := range []Spec{
		{Accel: "xen", CPUs: 1, MemoryMiB: 256},
		{Accel: AccelTCG, CPUs: 0, MemoryMiB: 256},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, Disks: []Disk{{ID: "VDA", Chain: []string{"/a"}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, Disks: []Disk{{ID: "vda", Chain: []string{"relative"}}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, Disks: []Disk{{ID: "vda"}}},
		{Accel: AccelTCG, CPUs: 1, MemoryMiB: 256, Disks: []Disk{{ID: "vda", Format: "raw", Chain: []string{"/a", "/b"}}}},
	} {
		if _, err := bad.Args(); err == nil {
			t.Errorf("Args accepted %+v", bad)
		}
	}
}
