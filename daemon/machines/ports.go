package machines

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/record"
	"kiln/hypervisor"
	"kiln/internal/netstat"
)

// SSH ports: each instance's port 22 is forwarded from a loopback port of this range,
// chosen at launch and kept for the instance's life.
const (
	SSHPortBase  = 42200
	SSHPortCount = 1000
)

// Ports checks and completes the ports a launch publishes: tcp unless udp is given,
// 127.0.0.1 unless an address is, host ports from 1024 (QEMU runs unprivileged), each
// host port once.
func Ports(publish []api.Port) ([]record.Port, error) {
	var out []record.Port
	seen := map[string]bool{}
	for _, p := range publish {
		r := record.Port{Protocol: p.Protocol, HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort}
		if r.Protocol == "" {
			r.Protocol = "tcp"
		}
		if r.HostIP == "" {
			r.HostIP = "127.0.0.1"
		}
		ip := net.ParseIP(r.HostIP)
		switch {
		case r.Protocol != "tcp" && r.Protocol != "udp":
			return nil, fmt.Errorf("publish %s: protocol %q: want tcp or udp: %w", portString(r), r.Protocol, errdefs.ErrInvalidArgument)
		case ip == nil || ip.To4() == nil:
			return nil, fmt.Errorf("publish %s: host address %q: want an IPv4 address of this host: %w", portString(r), r.HostIP, errdefs.ErrInvalidArgument)
		case r.HostPort < 1024 || r.HostPort > 65535:
			return nil, fmt.Errorf("publish %s: host port %d: want 1024 to 65535 (QEMU runs unprivileged): %w", portString(r), r.HostPort, errdefs.ErrInvalidArgument)
		case r.HostPort >= SSHPortBase && r.HostPort < SSHPortBase+SSHPortCount:
			return nil, fmt.Errorf("publish %s: host ports %d to %d are kept for instances' SSH: %w", portString(r), SSHPortBase, SSHPortBase+SSHPortCount-1, errdefs.ErrInvalidArgument)
		case r.GuestPort < 1 || r.GuestPort > 65535:
			return nil, fmt.Errorf("publish %s: guest port %d: want 1 to 65535: %w", portString(r), r.GuestPort, errdefs.ErrInvalidArgument)
		}
		r.HostIP = ip.To4().String()
		key := r.Protocol + "/" + strconv.Itoa(r.HostPort)
		if seen[key] {
			return nil, fmt.Errorf("publish: host port %d/%s is given twice: %w", r.HostPort, r.Protocol, errdefs.ErrInvalidArgument)
		}
		seen[key] = true
		out = append(out, r)
	}
	return out, nil
}

// Overlap reports whether two forwards would take the same host port.
func Overlap(a, b record.Port) bool {
	return a.Protocol == b.Protocol && a.HostPort == b.HostPort &&
		(a.HostIP == b.HostIP || a.HostIP == "0.0.0.0" || b.HostIP == "0.0.0.0")
}

// Free checks that QEMU can listen on the port now: taken by another process, it says
// which, if this host shows it.
func Free(p record.Port) error {
	err := bindable(p)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("host port %s: %s is not an address of this host: %w", portString(p), p.HostIP, errdefs.ErrInvalidArgument)
	}
	who := "another process"
	if h := holder(p.Protocol, p.HostPort); h != "" {
		who = h
	}
	return fmt.Errorf("host port %s is taken by %s: %w", portString(p), who, errdefs.ErrInvalidArgument)
}

// bindable tries to listen on the port, and lets it go.
func bindable(p record.Port) error {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
	var err error
	if p.Protocol == "udp" {
		var c net.PacketConn
		if c, err = net.ListenPacket("udp4", addr); err == nil {
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen("tcp4", addr); err == nil {
			l.Close()
		}
	}
	return err
}

// CheckPorts refuses the ports r publishes when one of the others (the instances in
// use) publishes one of them, and chooses r's SSH port when it has none: one no other
// instance has.
func CheckPorts(r *record.Instance, others []record.Instance) error {
	used := map[int]bool{}
	for _, o := range others {
		used[o.SSHPort] = true
		for _, p := range o.Ports {
			used[p.HostPort] = true
			for _, q := range r.Ports {
				if Overlap(p, q) {
					return fmt.Errorf("host port %s is published by instance %s (%s): %w", portString(q), o.ID, o.Name, errdefs.ErrInvalidArgument)
				}
			}
		}
	}
	if r.SSHPort != 0 {
		return nil
	}
	for _, p := range r.Ports {
		used[p.HostPort] = true
	}
	port, err := SSHPort(used)
	r.SSHPort = port
	return err
}

// SSHPort is a port of the SSH range that no instance in used has and that is free now
// (tried by a bind alone: the caller holds the manager's lock), the first such from a
// place picked at random: other kilnds of the host choose in the same range.
func SSHPort(used map[int]bool) (int, error) {
	start := rand.IntN(SSHPortCount)
	for i := range SSHPortCount {
		port := SSHPortBase + (start+i)%SSHPortCount
		if !used[port] && bindable(record.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: port}) == nil {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no loopback port of %d to %d is free for SSH: %w", SSHPortBase, SSHPortBase+SSHPortCount-1, errdefs.ErrResourceExhausted)
}

// MAC is the address of the network card of the instance id: the same at each start.
func MAC(id string) string {
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", sum[0], sum[1], sum[2])
}

// netOf is the machine's network card: its MAC made of the instance's id (the same at
// each start), SSH's forward and the published ones.
func netOf(rec record.Instance, outbound bool) *hypervisor.Net {
	n := &hypervisor.Net{MAC: MAC(rec.ID), Outbound: outbound}
	if rec.SSHPort != 0 {
		n.Forwards = append(n.Forwards, hypervisor.Forward{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: rec.SSHPort, GuestPort: 22})
	}
	for _, p := range rec.Ports {
		n.Forwards = append(n.Forwards, hypervisor.Forward{Protocol: p.Protocol, HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
	return n
}

func portString(p record.Port) string {
	return fmt.Sprintf("%s:%d/%s", p.HostIP, p.HostPort, p.Protocol)
}

// holder names the process that listens on a local port ("python3 (pid 4242)"), or ""
// when /proc does not show it.
func holder(proto string, port int) string {
	inodes := map[string]bool{}
	// A table that cannot be read names no one: Free says "another process".
	_ = netstat.Read(proto, func(s netstat.Socket) {
		if int(s.Local.Port()) == port {
			inodes["socket:["+strconv.FormatUint(s.Inode, 10)+"]"] = true
		}
	})
	if len(inodes) == 0 {
		return ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && inodes[target] {
			pid := strings.Split(fd, "/")[2]
			comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
			return fmt.Sprintf("%s (pid %s)", strings.TrimSpace(string(comm)), pid)
		}
	}
	return ""
}
