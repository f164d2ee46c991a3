package machines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
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

// FirewallTable is kilnd's nftables table, replaced whole at each start.
const FirewallTable = "kiln"

// firewallRules are the table's rules for the QEMU users' uid range: a connection a
// QEMU opens to the host's loopback is refused, but for the gateway's port 80 (sent to
// the metadata service) and DNS (the guest's resolver is the host's, which may listen on
// loopback); so are the link-local addresses (a cloud host's own metadata service).
// Connections a QEMU accepts (published ports) and what it sends on them are not new,
// and pass.
func firewallRules(uids string, metadataPort int) string {
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain metadata {
		type nat hook output priority -100; policy accept;
		meta skuid %[2]s ip daddr 127.0.0.1 tcp dport 80 dnat ip to 127.0.0.1:%[3]d
	}
	chain guests {
		type filter hook output priority 0; policy accept;
		meta skuid %[2]s ip daddr 127.0.0.1 tcp dport %[3]d accept
		meta skuid %[2]s ip daddr 127.0.0.0/8 meta l4proto { tcp, udp } th dport 53 accept
		meta skuid %[2]s ct state new ip daddr { 127.0.0.0/8, 169.254.0.0/16 } reject
		meta skuid %[2]s ct state new ip6 daddr { ::1, fe80::/10 } reject
	}
}
`, FirewallTable, uids, metadataPort)
}

// SetUpNetwork installs kilnd's firewall table with nft (the binary at nft) for the QEMU
// users of u, the metadata service being at metadataPort on loopback, and says what
// guests get. It never fails: without the firewall (kilnd not root, no nft, no
// nftables in the kernel), guests get a restricted network and Reason says why.
func SetUpNetwork(ctx context.Context, u Users, nft string, metadataPort int) Network {
	if !u.root {
		return Network{Reason: "kilnd is not root, so QEMU runs as kilnd's own user and no firewall can tell it apart"}
	}
	if metadataPort < 1 || metadataPort > 65535 {
		return Network{Reason: "the metadata service has no port"}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	uids := fmt.Sprintf("%d-%d", qemuUIDBase+1, qemuUIDBase+qemuUIDCount-1)
	cmd := exec.CommandContext(ctx, nft, "-f", "-")
	cmd.Stdin = strings.NewReader(firewallRules(uids, metadataPort))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return Network{Reason: fmt.Sprintf("%s not found: install nftables (apt-get install nftables)", nft)}
		}
		return Network{Reason: fmt.Sprintf("%s -f -: %v: %s", nft, err, firstLine(strings.TrimSpace(stderr.String())))}
	}
	return Network{Outbound: true, Metadata: true, MetadataPort: metadataPort}
}

// String says what guests get, for kilnd's log and kiln info.
func (n Network) String() string {
	if n.Outbound {
		return fmt.Sprintf("outbound and metadata (gateway %s:80 → 127.0.0.1:%d)", hypervisor.MetadataIP, n.MetadataPort)
	}
	return "restricted (no outbound, no metadata service): " + n.Reason
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
