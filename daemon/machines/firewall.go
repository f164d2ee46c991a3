package machines

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kiln/hypervisor"
)

// Network is the host's side of the guests' network, set up once at kilnd's start.
type Network struct {
	// Outbound: guests open connections beyond the host, and the gateway's port 80 leads
	// to the metadata service, listening at MetadataAddr. It needs the firewall: QEMU's
	// user network maps the guest's gateway to the host's loopback, as QEMU's user.
	Outbound     bool
	MetadataAddr netip.AddrPort
	// Reason says why guests have neither, when they have not.
	Reason string
}

// String says what guests get, for kilnd's log and kiln info.
func (n Network) String() string {
	if n.Outbound {
		return fmt.Sprintf("outbound and metadata (gateway %s:80 → %s)", hypervisor.MetadataIP, n.MetadataAddr)
	}
	return "restricted (no outbound, no metadata service): " + n.Reason
}

// MetadataAddr is where the metadata service of the kilnd of root listens, at its try-th
// try: a port below 1024 (which only root may bind, so that no user takes it while kilnd
// is down and QEMUs still send their guests there), one of 600 to 699 (none a common
// service's: a web server's *:80 would refuse it), on a loopback address of its own,
// 127.100-199.x.y, all made of root.
func MetadataAddr(root string, try int) netip.AddrPort {
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	d := sha256.Sum256([]byte(root))
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 100 + d[0]%100, d[1], 1 + d[2]%254}), uint16(600+(int(d[3])+try)%100))
}

// The firewall is two nftables tables (docs/decisions.md, "The guest's network"):
//
//   - GuardTable, the same from every kilnd of the host, refuses the connections every
//     QEMU user opens to any of the host's own addresses (loopback's and every other),
//     to link-local addresses and to clouds' metadata addresses (a cloud host's own),
//     but those a kilnd sent on to its metadata service (marked redirectMark) and DNS to
//     the host's loopback resolvers (the guest's resolver is the host's, through QEMU).
//     Connections a QEMU accepts (published ports) and what it sends on them are not
//     new, and pass. It is never removed: QEMUs outlive kilnd.
//   - each kilnd's own table (tableOf its metadata address) sends the gateway's port 80
//     of its instances' QEMU users, a set it keeps (Sync), to its metadata service,
//     marking the connection; it goes with kilnd (Close), and a kilnd starting removes
//     those of kilnds that were killed (staleTables).
const GuardTable = "kiln"

// redirectMark marks (conntrack) the connections a kilnd sent to its metadata service.
const redirectMark = "0x6b696c6e"

func guardRules(uids string, resolvers []netip.Addr) string {
	dns := ""
	if len(resolvers) > 0 {
		list := make([]string, len(resolvers))
		for i, a := range resolvers {
			list[i] = a.String()
		}
		dns = fmt.Sprintf("\t\tmeta skuid %s ip daddr { %s } meta l4proto { tcp, udp } th dport 53 accept\n", uids, strings.Join(list, ", "))
	}
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain guests {
		type filter hook output priority 0; policy accept;
		meta skuid %[2]s ct mark %[3]s accept
%[4]s		meta skuid %[2]s ct state new fib daddr type local reject
		meta skuid %[2]s ct state new ip daddr { 127.0.0.0/8, 169.254.0.0/16, 100.100.100.200 } reject
		meta skuid %[2]s ct state new ip6 daddr { ::1, fe80::/10, fd00:ec2::254 } reject
	}
}
`, GuardTable, uids, redirectMark, dns)
}

func metadataRules(table string, to netip.AddrPort) string {
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	set guests { typeof meta skuid; }
	chain metadata {
		type nat hook output priority -100; policy accept;
		meta skuid @guests ip daddr 127.0.0.1 tcp dport 80 ct mark set %[2]s dnat ip to %[3]s
	}
}
`, table, redirectMark, to)
}

// loopbackResolvers are the loopback nameservers of resolv.conf (QEMU's DNS asks them).
func loopbackResolvers(resolvConf string) []netip.Addr {
	b, err := os.ReadFile(resolvConf)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// Firewall is this kilnd's part of the host's firewall. Safe for concurrent use.
type Firewall struct {
	nft   string
	table string
	mu    sync.Mutex
}

// SetUpNetwork listens for the metadata service (MetadataAddr of root), installs the
// firewall with nft (the binary at nft) for the QEMU users of u, and says what guests
// get, with the listener to serve the metadata service on. It never fails: without the
// firewall (kilnd not root, no nft, no nftables in the kernel) or the listener, guests
// get a restricted network, Reason says why, and the Firewall and listener are nil.
func SetUpNetwork(ctx context.Context, u Users, nft, root string) (Network, *Firewall, net.Listener) {
	if !u.root {
		return Network{Reason: "kilnd is not root, so QEMU runs as kilnd's own user and no firewall can tell it apart"}, nil, nil
	}
	var addr netip.AddrPort
	var ln net.Listener
	var err error
	for try := 0; try < 8 && ln == nil; try++ { // a port another service has: the next
		addr = MetadataAddr(root, try)
		ln, err = net.Listen("tcp4", addr.String())
	}
	if err != nil {
		return Network{Reason: fmt.Sprintf("the metadata service cannot listen: %v", err)}, nil, nil
	}
	f := &Firewall{nft: nft, table: tableOf(addr)}
	uids := fmt.Sprintf("%d-%d", qemuUIDBase+1, qemuUIDBase+qemuUIDCount-1)
	script := guardRules(uids, loopbackResolvers("/etc/resolv.conf")) + metadataRules(f.table, addr) + f.staleTables(ctx)
	if err := f.run(ctx, script); err != nil {
		ln.Close()
		return Network{Reason: err.Error()}, nil, nil
	}
	return Network{Outbound: true, MetadataAddr: addr}, f, ln
}

// tableOf is the table of the kilnd whose metadata service listens at addr:
// kiln_127_A_B_C_PORT.
func tableOf(addr netip.AddrPort) string {
	return "kiln_" + strings.ReplaceAll(addr.Addr().String(), ".", "_") + "_" + strconv.Itoa(int(addr.Port()))
}

// staleTables are the commands that delete the tables of kilnds gone without removing
// theirs (killed): those whose metadata address (in the table's name) nobody listens on.
// A set of theirs could hold a QEMU user this kilnd gives an instance later.
func (f *Firewall) staleTables(ctx context.Context) string {
	cmd := exec.CommandContext(ctx, f.nft, "list", "tables")
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	var script strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "table inet ")
		if !ok || !strings.HasPrefix(name, "kiln_") || name == f.table {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(name, "kiln_"), "_")
		if len(parts) != 5 {
			continue
		}
		addr, err := netip.ParseAddrPort(strings.Join(parts[:4], ".") + ":" + parts[4])
		if err != nil || !addr.Addr().Is4() || !addr.Addr().IsLoopback() {
			continue
		}
		c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) { // "table" first: a table gone meanwhile fails nothing
			fmt.Fprintf(&script, "table inet %[1]s\ndelete table inet %[1]s\n", name)
		}
	}
	return script.String()
}

// Sync makes the QEMU users whose connections reach this kilnd's metadata service
// those uids gives (evaluated under the firewall's lock, so that the last call's list
// is the one that stays).
func (f *Firewall) Sync(ctx context.Context, uids func() []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	script := fmt.Sprintf("flush set inet %s guests\n", f.table)
	if list := uids(); len(list) > 0 {
		elems := make([]string, len(list))
		for i, uid := range list {
			elems[i] = fmt.Sprint(uid)
		}
		script += fmt.Sprintf("add element inet %s guests { %s }\n", f.table, strings.Join(elems, ", "))
	}
	return f.run(ctx, script)
}

// Close removes this kilnd's table: its metadata service is gone. The guard stays.
func (f *Firewall) Close(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.run(ctx, fmt.Sprintf("delete table inet %s\n", f.table))
}

// run runs nft on script, one transaction.
func (f *Firewall) run(ctx context.Context, script string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s not found: install nftables (apt-get install nftables)", f.nft)
		}
		line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		return fmt.Errorf("%s -f -: %v: %s", f.nft, err, line)
	}
	return nil
}
