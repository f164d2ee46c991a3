package machines

import (
	"context"
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

// TestFirewall installs the real firewall (nftables), in a network namespace of its own,
// and checks what QEMU users may reach, as clients of those uids (this test's binary,
// copied where they can run it): the host's loopback and its other addresses are
// refused to them and open to root; another host is open to them; the gateway's port
// 80 of a QEMU user in this kilnd's set reaches the metadata service, of one outside it
// nothing; a guard table left with other chains is made whole again; Close removes the
// kilnd's table only.
func TestFirewall(t *testing.T) {
	if !kilntest.OwnNetns(t) {
		return
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
	serveOn := func(ln net.Listener, body string) string {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	serve := func(addr, body string) string {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		return serveOn(ln, body)
	}
	other := serve("127.0.0.1:0", "other")
	kilntest.Run(t, "ip", "addr", "add", "10.123.0.1/32", "dev", "lo") // an address of the host's not in 127/8
	local := serve("10.123.0.1:0", "local")
	remote := serveOn(kilntest.NewRemoteHost(t).Listen(t, 0), "remote")

	// A guard table with a chain of another version's is replaced whole; the table of a
	// kilnd gone (nothing listens on its metadata address) is removed, a live one's kept.
	kilntest.Run(t, nft, "add table inet kiln; add chain inet kiln stale { type nat hook output priority -100; }")
	kilntest.Run(t, nft, "add table inet kiln_127_150_1_1_601; add table inet kiln_127_150_1_2_602")
	serve("127.150.1.2:602", "another kilnd's")
	root := t.TempDir() + "/root"
	serve(MetadataAddr(root, 0).String(), "a service with the port kilnd tries first")
	ctx := context.Background()
	network, fw, ln := SetUpNetwork(ctx, Users{root: true}, nft, root)
	if fw == nil || !network.Outbound || network.MetadataAddr != MetadataAddr(root, 1) {
		t.Fatalf("SetUpNetwork: %+v", network)
	}
	serveOn(ln, "metadata")
	t.Cleanup(func() { fw.Close(ctx) })
	if out, err := exec.Command(nft, "list", "table", "inet", GuardTable).Output(); err != nil || strings.Contains(string(out), "stale") {
		t.Errorf("the guard table after set-up: %v\n%s", err, out)
	}
	if out, err := exec.Command(nft, "list", "tables").Output(); err != nil ||
		strings.Contains(string(out), "kiln_127_150_1_1_601\n") || !strings.Contains(string(out), "kiln_127_150_1_2_602\n") {
		t.Errorf("the tables after set-up: %v\n%s; want the gone kilnd's removed and the live one's kept", err, out)
	}
	admitted, stranger := uint32(qemuUIDBase+65001), uint32(qemuUIDBase+65002)
	if err := fw.Sync(ctx, func() []uint32 { return []uint32{admitted} }); err != nil {
		t.Fatal(err)
	}
	get := func(uid uint32, addr string) string {
		cmd := exec.Command(client)
		cmd.Env = []string{"KILN_TEST_GET=http://" + addr + "/"}
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.Output()
		if err != nil {
			return "refused"
		}
		return string(out)
	}
	gateway := "127.0.0.1:80" // the guest's gateway, as QEMU reaches it
	for _, tc := range []struct {
		who, addr, want string
		uid             uint32
	}{
		{"root, the host's loopback", other, "other", 0},
		{"root, the host's other address", local, "local", 0},
		{"a QEMU user, the host's loopback", other, "refused", admitted},
		{"a QEMU user, the host's other address", local, "refused", admitted},
		{"a QEMU user, another host", remote, "remote", admitted},
		{"a QEMU user of another kilnd, the host's loopback", other, "refused", stranger},
		{"a QEMU user, the metadata service's own address", network.MetadataAddr.String(), "refused", stranger},
		{"this kilnd's QEMU user, the gateway's port 80", gateway, "metadata", admitted},
		{"a QEMU user not this kilnd's, the gateway's port 80", gateway, "refused", stranger},
	} {
		if got := get(tc.uid, tc.addr); got != tc.want {
			t.Errorf("%s (uid %d, %s): %q, want %q", tc.who, tc.uid, tc.addr, got, tc.want)
		}
	}
	// The set follows Sync: the admitted user, once out of it, reaches nothing.
	if err := fw.Sync(ctx, func() []uint32 { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := get(admitted, gateway); got != "refused" {
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
	ln.Close()

	// Without root or nft, guests get a restricted network and are told why.
	for _, tc := range []struct {
		users Users
		nft   string
		says  string
	}{
		{Users{}, nft, "not root"},
		{Users{root: true}, "/nonexistent/nft", "install nftables"},
	} {
		n, f, l := SetUpNetwork(ctx, tc.users, tc.nft, root)
		if f != nil || l != nil || n.Outbound || !strings.Contains(n.String(), tc.says) {
			t.Errorf("SetUpNetwork(%+v, %s): %+v; want restricted, saying %q", tc.users, tc.nft, n, tc.says)
		}
	}
}

func TestLoopbackResolvers(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("# a comment\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver ::1\noptions edns0\nnameserver 127.0.1.1\n"), 0o644)
	got := loopbackResolvers(conf)
	if len(got) != 2 || got[0].String() != "127.0.0.53" || got[1].String() != "127.0.1.1" {
		t.Errorf("loopbackResolvers: %v; want 127.0.0.53 and 127.0.1.1", got)
	}
}
