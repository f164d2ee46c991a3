package hypervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// Files of an instance's directory. kilnd opens each of them and hands QEMU the
// descriptor: QEMU opens nothing there by name (it could not: it runs as another user).
const (
	ConsoleFile   = "console.log"  // the serial console's log; QEMU appends to it
	ConsoleSocket = "console.sock" // the serial console itself; kilnd listens, QEMU accepts
	QMPSocket     = "qmp.sock"     // QMP; kilnd listens on it and QEMU accepts on that socket
	AgentSocket   = "agent.sock"   // the guest agent's channel; kilnd listens, QEMU accepts
	PIDFile       = "qemu.pid"     // written by kilnd once QEMU is started
	LogFile       = "qemu.log"     // QEMU's own stdout and stderr
)

// Disk is one virtio-blk disk of a machine, given as its whole chain of open files so
// that QEMU never follows a file name found in an image header, and never opens a file
// by name at all. The caller opens the files (all but the top read-only; the top
// read-write unless ReadOnly) and closes them once Start or AttachDisk returns: QEMU has
// its own descriptors then.
type Disk struct {
	ID     string     // device id and node-name prefix, e.g. "vda"
	Files  []*os.File // bottom to top
	Format string     // format of the files: "qcow2" (default) or "raw" (a single file)
	// ReadOnly gives the guest the top read-only too (a seed volume).
	ReadOnly bool
}

// User is who QEMU runs as: never root. Each instance has its own uid, so that a QEMU
// taken over by its guest reaches no other instance's QEMU.
type User struct {
	UID, GID uint32
	Groups   []uint32 // e.g. the group of /dev/kvm
}

// Spec is what a machine is made of. Dir is its instance directory.
type Spec struct {
	Dir       string // named after the instance: QEMU's -name is its last element
	Accel     string // AccelKVM or AccelTCG
	CPUs      int
	MemoryMiB int
	User      User
	// Kernel and Initrd, when set, boot the kernel directly. QEMU opens them again
	// through /proc/self/fd, which checks their mode: User must be let read them (a
	// SealedCopy is). The caller closes them after Start.
	Kernel  *os.File
	Initrd  *os.File
	Cmdline string
	Disks   []Disk
	// Net, when set, is the machine's network card on QEMU's user-mode network.
	Net *Net
	// Firmware, when set, makes it a UEFI machine (OVMF); without it, SeaBIOS boots it.
	Firmware *Firmware
	// TPM, when set, gives it a virtual TPM 2.0 (swtpm, started by Start; a UEFI
	// machine's only: OVMF measures the boot into it).
	TPM *TPM
}

// Net is a virtio network card on QEMU's user-mode network, with host ports forwarded
// to the guest's. The network is EC2's link-local one (GuestNetwork): the guest is
// GuestIP by DHCP, its DNS is at DNSIP (where EC2 has its resolver) and its gateway is
// MetadataIP. QEMU maps the gateway to the host's loopback, as its user sees it: kilnd's
// firewall (daemon/machines) lets a machine's user reach only the metadata service there
// (docs/decisions.md, "The guest's network").
//
// Without Outbound the network is restricted: the guest reaches nothing of the host's or
// beyond, the gateway included, and the forwards still carry connections in.
type Net struct {
	MAC      string // 52:54:00:xx:xx:xx
	Forwards []Forward
	Outbound bool
}

// The guest's network: the addresses every instance sees.
const (
	GuestNetwork = "169.254.169.0/24"
	GuestIP      = "169.254.169.15"
	DNSIP        = "169.254.169.253"
	MetadataIP   = "169.254.169.254"
)

// Forward is a host port QEMU listens on (as the machine's user) and forwards to a port
// of the guest.
type Forward struct {
	Protocol  string // tcp or udp
	HostIP    string
	HostPort  int
	GuestPort int
}

var macAddr = regexp.MustCompile(`^52:54:00(:[0-9a-f]{2}){3}$`)

// netArgs is the card's -netdev and -device.
func (n *Net) netArgs() ([]string, error) {
	if !macAddr.MatchString(n.MAC) {
		return nil, fmt.Errorf("MAC address %q: want 52:54:00:xx:xx:xx", n.MAC)
	}
	restrict := "on"
	if n.Outbound {
		restrict = "off"
	}
	netdev := fmt.Sprintf("user,id=net0,restrict=%s,ipv6=off,net=%s,host=%s,dns=%s,dhcpstart=%s",
		restrict, GuestNetwork, MetadataIP, DNSIP, GuestIP)
	for _, f := range n.Forwards {
		ip := net.ParseIP(f.HostIP)
		if f.Protocol != "tcp" && f.Protocol != "udp" || ip == nil || ip.To4() == nil ||
			f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
			return nil, fmt.Errorf("port forward %s:%s:%d-:%d: want tcp or udp, an IPv4 address and ports 1 to 65535",
				f.Protocol, f.HostIP, f.HostPort, f.GuestPort)
		}
		netdev += fmt.Sprintf(",hostfwd=%s:%s:%d-:%d", f.Protocol, ip, f.HostPort, f.GuestPort)
	}
	// romfile= : no option ROM, so the firmware never tries to boot from the network.
	return []string{"-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=,mac=" + n.MAC}, nil
}

// Sandbox is QEMU's seccomp policy for every machine: no obsolete system calls, no
// setuid, no fork or exec, no changes to scheduling or memory policy.
const Sandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// HotplugPorts is how many disks can be attached to a running machine at once.
const HotplugPorts = 8

// HotplugPort names the i-th PCIe root port for hot-plugged disks.
func HotplugPort(i int) string { return "hp" + strconv.Itoa(i) }

var nodeID = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// Args builds QEMU's command line for the spec, passing every file through p (fd=N,
// and /dev/fdset/N for QEMU's block and chardev layers): a q35 machine without default
// devices under the seccomp Sandbox, the serial console on its socket and logged to its
// file, QMP on the
// socket p carries, each disk as an explicit -blockdev chain (file and format node per
// layer, backing links set here, the bottom one's set to none) behind a virtio-blk
// device. The command line names no file of kiln's.
func (s Spec) Args(p *Passed) ([]string, error) {
	if s.Accel != AccelKVM && s.Accel != AccelTCG {
		return nil, fmt.Errorf("accelerator %q: want kvm or tcg", s.Accel)
	}
	if s.CPUs < 1 || s.MemoryMiB < 16 {
		return nil, fmt.Errorf("machine of %d vCPUs and %d MiB: too small", s.CPUs, s.MemoryMiB)
	}
	if s.User.UID == 0 || s.User.GID == 0 {
		return nil, errors.New("QEMU never runs as root: give the machine a user")
	}
	if s.Kernel == nil && s.Initrd != nil {
		return nil, errors.New("an initrd needs a kernel")
	}
	if s.TPM != nil && s.Firmware == nil {
		return nil, errors.New("a TPM needs UEFI firmware")
	}
	cpu := "max"
	if s.Accel == AccelKVM {
		cpu = "host"
	}
	if p.console == nil || p.consoleSock == nil || p.qmp == nil || p.agent == nil {
		return nil, errors.New("the console, its socket, QMP and agent sockets are not open")
	}
	machine := "q35,accel=" + s.Accel
	var fwArgs []string
	if s.Firmware != nil {
		var opts string
		var err error
		if fwArgs, opts, err = s.Firmware.firmwareArgs(p); err != nil {
			return nil, err
		}
		machine += opts
	}
	args := []string{
		"-name", "guest=" + filepath.Base(s.Dir) + ",debug-threads=on",
		"-machine", machine,
		"-cpu", cpu,
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-sandbox", Sandbox,
	}
	consoleArgs, console, err := p.fdset(p.console, nil, "console")
	if err != nil {
		return nil, err
	}
	consoleFD, err := p.add(p.consoleSock)
	if err != nil {
		return nil, err
	}
	qmpFD, err := p.add(p.qmp)
	if err != nil {
		return nil, err
	}
	agentFD, err := p.add(p.agent)
	if err != nil {
		return nil, err
	}
	args = append(args, fwArgs...)
	args = append(args, consoleArgs...)
	args = append(args,
		// The serial port is a socket QEMU serves (kiln console --attach connects to
		// it) that logs all the guest writes to the console file, whether or not a
		// client is connected; logappend=on: the file keeps every boot, not just the
		// last. See docs/decisions.md, "The serial console: a socket that logs".
		"-chardev", "socket,id=console,server=on,wait=off,fd="+strconv.Itoa(consoleFD)+",logfile="+console+",logappend=on",
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,server=on,wait=off,fd="+strconv.Itoa(qmpFD),
		"-mon", "chardev=qmp,mode=control",
		// The guest agent's port: qemu-guest-agent in the guest starts when it appears.
		"-chardev", "socket,id=agent,server=on,wait=off,fd="+strconv.Itoa(agentFD),
		"-device", "virtio-serial-pci,id=serial0",
		"-device", "virtserialport,bus=serial0.0,chardev=agent,name=org.qemu.guest_agent.0",
		// A guest kernel that panics tells QEMU through pvpanic, and QEMU pauses it
		// (rather than powering it off) so that Watch reports one failure, as for a
		// stop on an accelerator's internal error, and kilnd stops it with the reason.
		"-device", "pvpanic-pci,bus=pcie.0",
		"-action", "panic=pause",
	)
	if s.Kernel != nil {
		k, err := p.byPath(s.Kernel)
		if err != nil {
			return nil, err
		}
		args = append(args, "-kernel", k)
		if s.Initrd != nil {
			i, err := p.byPath(s.Initrd)
			if err != nil {
				return nil, err
			}
			args = append(args, "-initrd", i)
		}
		if s.Cmdline != "" {
			args = append(args, "-append", s.Cmdline)
		}
	}
	if s.TPM != nil {
		if p.tpm == nil {
			return nil, errors.New("the TPM's socket is not open")
		}
		tpmFD, err := p.add(p.tpm)
		if err != nil {
			return nil, err
		}
		// QEMU's TPM emulator speaks to swtpm over the control socket it is given
		// connected, and hands swtpm its data channel through it.
		args = append(args, "-chardev", "socket,id=tpm,fd="+strconv.Itoa(tpmFD),
			"-tpmdev", "emulator,id=tpm0,chardev=tpm", "-device", "tpm-crb,tpmdev=tpm0")
	}
	if s.Net != nil {
		a, err := s.Net.netArgs()
		if err != nil {
			return nil, err
		}
		args = append(args, a...)
	}
	// PCIe root ports, empty, for disks attached while the machine runs (q35's root bus
	// takes no hot-plugged devices).
	for i := 0; i < HotplugPorts; i++ {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", HotplugPort(i), i+1))
	}
	for i, d := range s.Disks {
		nodes, top, err := d.blockdevNodes(func(j int, f, ro *os.File) (string, error) {
			a, name, err := p.fdset(f, ro, fileNode(d.ID, j))
			args = append(args, a...)
			return name, err
		})
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			b, _ := json.Marshal(n)
			args = append(args, "-blockdev", string(b))
		}
		dev := "virtio-blk-pci,drive=" + top + ",id=" + d.ID
		if s.Kernel == nil && i == 0 {
			dev += ",bootindex=0"
		}
		args = append(args, "-device", dev)
	}
	return args, nil
}

// fileNode and formatNode name the block nodes of the i-th file of a disk's chain.
func fileNode(disk string, i int) string   { return disk + "-f" + strconv.Itoa(i) }
func formatNode(disk string, i int) string { return disk + "-" + strconv.Itoa(i) }

// blockdevNodes returns the block nodes of a disk's chain (a file and a format node per
// file, backing links set here, none at the bottom) and the top node's name. pass hands
// QEMU the i-th file (and, for a writable one, a read-only descriptor of it, which QEMU
// takes when it reopens the file read-only) and returns the name QEMU opens it by.
func (d Disk) blockdevNodes(pass func(i int, f, ro *os.File) (string, error)) ([]map[string]any, string, error) {
	if !nodeID.MatchString(d.ID) {
		return nil, "", fmt.Errorf("disk id %q: want a lowercase letter and up to 15 letters or digits", d.ID)
	}
	format := d.Format
	if format == "" {
		format = "qcow2"
	}
	if len(d.Files) == 0 || format == "raw" && len(d.Files) != 1 {
		return nil, "", fmt.Errorf("disk %s: %d files in its chain", d.ID, len(d.Files))
	}
	var out []map[string]any
	var below string
	for i, f := range d.Files {
		if f == nil {
			return nil, "", fmt.Errorf("disk %s: file %d is not open", d.ID, i)
		}
		readOnly := i < len(d.Files)-1 || d.ReadOnly
		var ro *os.File
		if !readOnly {
			var err error
			if ro, err = reopenReadOnly(f); err != nil {
				return nil, "", fmt.Errorf("disk %s: %w", d.ID, err)
			}
			defer ro.Close()
		}
		name, err := pass(i, f, ro)
		if err != nil {
			return nil, "", err
		}
		file, node := fileNode(d.ID, i), formatNode(d.ID, i)
		fmtNode := map[string]any{"driver": format, "node-name": node, "file": file, "read-only": readOnly}
		if format == "qcow2" {
			if below == "" {
				fmtNode["backing"] = nil // never the name in the header
			} else {
				fmtNode["backing"] = below
			}
		}
		out = append(out, map[string]any{"driver": "file", "node-name": file, "filename": name, "read-only": readOnly}, fmtNode)
		below = node
	}
	return out, below, nil
}
