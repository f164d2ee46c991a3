package hypervisor

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
)

// Files QEMU keeps in an instance's directory.
const (
	ConsoleFile = "console.log" // the serial console, whole
	QMPSocket   = "qmp.sock"
	PIDFile     = "qemu.pid"
	LogFile     = "qemu.log" // QEMU's own stdout and stderr
)

// Disk is one virtio-blk disk of a machine, given as its whole chain of files so that
// QEMU never follows a file name found in an image header.
type Disk struct {
	ID     string   // device id and node-name prefix, e.g. "vda"
	Chain  []string // qcow2 files bottom to top; all but the top are opened read-only
	Format string   // format of the files: "qcow2" (default) or "raw" (a single file)
	// ReadOnly opens the top read-only too (a seed volume).
	ReadOnly bool
}

// Spec is what a machine is made of. Dir is its instance directory.
type Spec struct {
	Name      string
	Dir       string
	Accel     string // AccelKVM or AccelTCG
	CPUs      int
	MemoryMiB int
	Kernel    string // direct kernel boot when set
	Initrd    string
	Cmdline   string
	Disks     []Disk
}

// HotplugPorts is how many disks can be attached to a running machine at once.
const HotplugPorts = 8

// HotplugPort names the i-th PCIe root port for hot-plugged disks.
func HotplugPort(i int) string { return "hp" + strconv.Itoa(i) }

var nodeID = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// Args builds QEMU's command line for the spec: a q35 machine without default devices,
// the serial console to a file, QMP on a Unix socket in Dir, each disk as an explicit
// -blockdev chain (file and format node per layer, backing links set here, the bottom
// one's set to none) behind a virtio-blk device.
func (s Spec) Args() ([]string, error) {
	if s.Accel != AccelKVM && s.Accel != AccelTCG {
		return nil, fmt.Errorf("accelerator %q: want kvm or tcg", s.Accel)
	}
	if s.CPUs < 1 || s.MemoryMiB < 16 {
		return nil, fmt.Errorf("machine of %d vCPUs and %d MiB: too small", s.CPUs, s.MemoryMiB)
	}
	cpu := "max"
	if s.Accel == AccelKVM {
		cpu = "host"
	}
	args := []string{
		"-name", "guest=" + s.Name + ",debug-threads=on",
		"-machine", "q35,accel=" + s.Accel,
		"-cpu", cpu,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none",
		// append=on: the console keeps every boot of the instance, not just the last.
		"-chardev", "file,id=console,append=on,path=" + filepath.Join(s.Dir, ConsoleFile),
		"-serial", "chardev:console",
		"-qmp", "unix:" + filepath.Join(s.Dir, QMPSocket) + ",server=on,wait=off",
		"-pidfile", filepath.Join(s.Dir, PIDFile),
		// A guest kernel that panics tells QEMU through pvpanic, and QEMU pauses it
		// (rather than powering it off) so that Watch reports one failure, as for a
		// stop on an accelerator's internal error, and kilnd stops it with the reason.
		"-device", "pvpanic-pci,bus=pcie.0",
		"-action", "panic=pause",
	}
	if s.Kernel != "" {
		args = append(args, "-kernel", s.Kernel)
		if s.Initrd != "" {
			args = append(args, "-initrd", s.Initrd)
		}
		if s.Cmdline != "" {
			args = append(args, "-append", s.Cmdline)
		}
	}
	// PCIe root ports, empty, for disks attached while the machine runs (q35's root bus
	// takes no hot-plugged devices).
	for i := 0; i < HotplugPorts; i++ {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", HotplugPort(i), i+1))
	}
	for i, d := range s.Disks {
		blockdevs, top, err := d.blockdevs()
		if err != nil {
			return nil, err
		}
		for _, b := range blockdevs {
			args = append(args, "-blockdev", b)
		}
		dev := "virtio-blk-pci,drive=" + top + ",id=" + d.ID
		if s.Kernel == "" && i == 0 {
			dev += ",bootindex=0"
		}
		args = append(args, "-device", dev)
	}
	return args, nil
}

// blockdevs returns the -blockdev JSON of a disk's chain and the top node's name.
func (d Disk) blockdevs() ([]string, string, error) {
	nodes, top, err := d.blockdevNodes()
	if err != nil {
		return nil, "", err
	}
	out := make([]string, len(nodes))
	for i, n := range nodes {
		b, _ := json.Marshal(n)
		out[i] = string(b)
	}
	return out, top, nil
}

// blockdevNodes returns the block nodes of a disk's chain (a file and a format node per
// file, backing links set here, none at the bottom) and the top node's name.
func (d Disk) blockdevNodes() ([]map[string]any, string, error) {
	if !nodeID.MatchString(d.ID) {
		return nil, "", fmt.Errorf("disk id %q: want a lowercase letter and up to 15 letters or digits", d.ID)
	}
	format := d.Format
	if format == "" {
		format = "qcow2"
	}
	if len(d.Chain) == 0 || format == "raw" && len(d.Chain) != 1 {
		return nil, "", fmt.Errorf("disk %s: %d files in its chain", d.ID, len(d.Chain))
	}
	var out []map[string]any
	var below string
	for i, f := range d.Chain {
		if !filepath.IsAbs(f) {
			return nil, "", fmt.Errorf("disk %s: file %q is not absolute", d.ID, f)
		}
		readOnly := i < len(d.Chain)-1 || d.ReadOnly
		file := fmt.Sprintf("%s-f%d", d.ID, i)
		node := fmt.Sprintf("%s-%d", d.ID, i)
		fmtNode := map[string]any{"driver": format, "node-name": node, "file": file, "read-only": readOnly}
		if format == "qcow2" {
			if below == "" {
				fmtNode["backing"] = nil // never the name in the header
			} else {
				fmtNode["backing"] = below
			}
		}
		out = append(out, map[string]any{"driver": "file", "node-name": file, "filename": f, "read-only": readOnly}, fmtNode)
		below = node
	}
	return out, below, nil
}
