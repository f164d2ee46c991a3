package machines

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// TestMain is also the client TestFirewall runs as other users: with KILN_TEST_GET set it
// prints what a GET of that URL answers, or exits 1.
func TestMain(m *testing.M) {
	if url := os.Getenv("KILN_TEST_GET"); url != "" {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			os.Exit(1)
		}
		io.Copy(os.Stdout, resp.Body)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFirewall installs the real firewall (nftables) and checks what QEMU users may
// reach, as clients of those uids (this test's binary, copied where they can run it):
// the host's loopback is refused to them
// and open to root; the gateway's port 80 of a QEMU user in this kilnd's set reaches the
// metadata service, of one outside it nothing; Close removes the kilnd's table only.
func TestFirewall(t *testing.T) {
	if os.Geteuid() != 0 {
		kilntest.Missing(t, "the firewall needs root")
	}
	nft := kilntest.Need(t, "nft")
	client := filepath.Join(t.TempDir(), "client")
	if err := os.Chmod(filepath.Dir(client), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(filepath.Dir(client)), 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(client, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	serve := func(body string) int {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().(*net.TCPAddr).Port
	}
	metadata, other := serve("metadata"), serve("other")
	ctx := context.Background()
	root := t.TempDir()
	network, fw := SetUpNetwork(ctx, Users{root: true}, nft, root, metadata)
	if fw == nil || !network.Outbound || !network.Metadata {
		t.Fatalf("SetUpNetwork: %+v", network)
	}
	t.Cleanup(func() { fw.Close(ctx) })
	admitted, stranger := uint32(qemuUIDBase+65001), uint32(qemuUIDBase+65002)
	if err := fw.Sync(ctx, func() []uint32 { return []uint32{admitted} }); err != nil {
		t.Fatal(err)
	}
	get := func(uid uint32, port int) string {
		cmd := exec.Command(client)
		cmd.Env = []string{fmt.Sprintf("KILN_TEST_GET=http://127.0.0.1:%d/", port)}
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.Output()
		if err != nil {
			return "refused"
		}
		return string(out)
	}
	for _, tc := range []struct {
		who  string
		uid  uint32
		port int
		want string
	}{
		{"root, the host's loopback", 0, other, "other"},
		{"a QEMU user, the host's loopback", admitted, other, "refused"},
		{"a QEMU user of another kilnd, the host's loopback", stranger, other, "refused"},
		{"a QEMU user, the metadata service's own port", stranger, metadata, "refused"},
		{"this kilnd's QEMU user, the gateway's port 80", admitted, 80, "metadata"},
		{"a QEMU user not this kilnd's, the gateway's port 80", stranger, 80, "refused"},
	} {
		if got := get(tc.uid, tc.port); got != tc.want {
			t.Errorf("%s (uid %d, port %d): %q, want %q", tc.who, tc.uid, tc.port, got, tc.want)
		}
	}
	// The set follows Sync: the admitted user, once out of it, reaches nothing.
	if err := fw.Sync(ctx, func() []uint32 { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := get(admitted, 80); got != "refused" {
		t.Errorf("after Sync without it, a QEMU user's port 80: %q, want refused", got)
	}
	if err := fw.Close(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nft, "list", "tables").Output()
	if err != nil || strings.Contains(string(out), fw.table) || !strings.Contains(string(out), "inet "+GuardTable+"\n") {
		t.Errorf("after Close: %v, tables %q; want the guard and not %s", err, out, fw.table)
	}
	if got := get(admitted, other); got != "refused" {
		t.Errorf("after Close, a QEMU user to the host's loopback: %q, want refused (the guard stays)", got)
	}

	// Without root or nft, guests get a restricted network and are told why.
	for _, tc := range []struct {
		users Users
		nft   string
		says  string
	}{
		{Users{}, nft, "not root"},
		{Users{root: true}, "/nonexistent/nft", "install nftables"},
	} {
		n, f := SetUpNetwork(ctx, tc.users, tc.nft, root, metadata)
		if f != nil || n.Outbound || !strings.Contains(n.String(), tc.says) {
			t.Errorf("SetUpNetwork(%+v, %s): %+v; want restricted, saying %q", tc.users, tc.nft, n, tc.says)
		}
	}
}
