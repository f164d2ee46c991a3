package machines

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"kiln/hypervisor"
)

// Network is the host's side of the guests' network, set up once at kilnd's start.
type Network struct {
	// Outbound: guests open connections beyond the host. It needs the firewall: QEMU's
	// user network maps the guest's gateway to the host's loopback, as QEMU's user.
	Outbound bool
	// Metadata: the gateway's port 80 leads to the metadata service, at MetadataPort
	// on the host's loopback.
	Metadata     bool
	MetadataPort int
	// Reason says why guests have neither, when they have not.
	Reason string
}

// String says what guests get, for kilnd's log and kiln info.
func (n Network) String() string {
	if n.Outbound {
		return fmt.Sprintf("outbound and metadata (gateway %s:80 → 127.0.0.1:%d)", hypervisor.MetadataIP, n.MetadataPort)
	}
	return "restricted (no outbound, no metadata service): " + n.Reason
}

// The firewall is two nftables tables (docs/decisions.md, "The guest's network"):
//
//   - GuardTable, the same from every kilnd of the host, refuses the connections every
//     QEMU user opens to the host's loopback and to link-local addresses (a cloud host's
//     own metadata service), but those sent on to a metadata service (dnat) and DNS
//     (the guest's resolver is the host's, which may listen on loopback). Connections a
//     QEMU accepts (published ports) and what it sends on them are not new, and pass.
//     It is never removed: QEMUs outlive kilnd.
//   - each kilnd's own table (kiln_ and a digest of its root) sends the gateway's port
//     80 of its instances' QEMU users, a set it keeps (Sync), to its metadata service;
//     it goes with kilnd (Close). Several kilnds of one host each send only their own.
const GuardTable = "kiln"

func guardRules(uids string) string {
	return fmt.Sprintf(`add table inet %[1]s
add chain inet %[1]s guests { type filter hook output priority 0; policy accept; }
flush chain inet %[1]s guests
add rule inet %[1]s guests meta skuid %[2]s ct status dnat accept
add rule inet %[1]s guests meta skuid %[2]s ip daddr 127.0.0.0/8 meta l4proto { tcp, udp } th dport 53 accept
add rule inet %[1]s guests meta skuid %[2]s ct state new ip daddr { 127.0.0.0/8, 169.254.0.0/16 } reject
add rule inet %[1]s guests meta skuid %[2]s ct state new ip6 daddr { ::1, fe80::/10 } reject
`, GuardTable, uids)
}

func metadataRules(table string, port int) string {
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	set guests { typeof meta skuid; }
	chain metadata {
		type nat hook output priority -100; policy accept;
		meta skuid @guests ip daddr 127.0.0.1 tcp dport 80 dnat ip to 127.0.0.1:%[2]d
	}
}
`, table, port)
}

// Firewall is this kilnd's part of the host's firewall. Safe for concurrent use.
type Firewall struct {
	nft   string
	table string
	mu    sync.Mutex
}

// SetUpNetwork installs the firewall with nft (the binary at nft) for the QEMU users of
// u, this kilnd's (of root) metadata service being at metadataPort on loopback, and says
// what guests get. It never fails: without the firewall (kilnd not root, no nft, no
// nftables in the kernel), guests get a restricted network, Reason says why, and the
// Firewall is nil.
func SetUpNetwork(ctx context.Context, u Users, nft, root string, metadataPort int) (Network, *Firewall) {
	if !u.root {
		return Network{Reason: "kilnd is not root, so QEMU runs as kilnd's own user and no firewall can tell it apart"}, nil
	}
	if metadataPort < 1 || metadataPort > 65535 {
		return Network{Reason: "the metadata service has no port"}, nil
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	sum := sha256.Sum256([]byte(root))
	f := &Firewall{nft: nft, table: "kiln_" + hex.EncodeToString(sum[:6])}
	uids := fmt.Sprintf("%d-%d", qemuUIDBase+1, qemuUIDBase+qemuUIDCount-1)
	if err := f.run(ctx, guardRules(uids)+metadataRules(f.table, metadataPort)); err != nil {
		return Network{Reason: err.Error()}, nil
	}
	return Network{Outbound: true, Metadata: true, MetadataPort: metadataPort}, f
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
