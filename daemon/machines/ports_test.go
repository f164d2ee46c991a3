package machines

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/record"
)

// TestPorts: published ports default to tcp on loopback, and are refused below 1024,
// past 65535, on a non-IPv4 address, with another protocol, or twice.
func TestPorts(t *testing.T) {
	got, err := Ports([]api.Port{{HostPort: 8080, GuestPort: 80}, {Protocol: "udp", HostIP: "0.0.0.0", HostPort: 8080, GuestPort: 53}})
	want := []record.Port{{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80}, {Protocol: "udp", HostIP: "0.0.0.0", HostPort: 8080, GuestPort: 53}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Ports: %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range [][]api.Port{
		{{HostPort: 80, GuestPort: 80}},
		{{HostPort: 70000, GuestPort: 80}},
		{{HostPort: 8080, GuestPort: 0}},
		{{HostIP: "::1", HostPort: 8080, GuestPort: 80}},
		{{HostIP: "localhost", HostPort: 8080, GuestPort: 80}},
		{{Protocol: "sctp", HostPort: 8080, GuestPort: 80}},
		{{HostPort: 8080, GuestPort: 80}, {HostPort: 8080, GuestPort: 81}},
		{{HostPort: SSHPortBase + 100, GuestPort: 22}},
	} {
		if _, err := Ports(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Ports(%+v): %v; want invalid", bad, err)
		}
	}
	if !Overlap(want[0], record.Port{Protocol: "tcp", HostIP: "0.0.0.0", HostPort: 8080}) || Overlap(want[0], want[1]) {
		t.Error("Overlap: an address of all the host's overlaps a loopback one of the same port and protocol, no other")
	}
}

// TestFreeNamesTheHolder: a port this process listens on is refused, naming it.
func TestFreeNamesTheHolder(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	err = Free(record.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: port})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("Free of a port this test holds: %v", err)
	}
	l.Close()
	if err := Free(record.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: port}); err != nil {
		t.Errorf("Free once let go: %v", err)
	}
	if p, err := SSHPort(map[int]bool{SSHPortBase: true}); err != nil || p <= SSHPortBase || p >= SSHPortBase+SSHPortCount {
		t.Errorf("SSHPort with the first taken: %d, %v", p, err)
	}
}

// TestClaim: a QEMU user claimed by one kilnd is refused to another, kept by its own,
// taken over once the first's root is gone, and free again once released.
func TestClaim(t *testing.T) {
	u := Users{root: true, claimDir: filepath.Join(t.TempDir(), "claims")}
	a, b := t.TempDir(), t.TempDir()
	if !u.Claim(7, a) {
		t.Fatal("a kilnd cannot claim a free user")
	}
	if !u.Claim(7, a) {
		t.Fatal("a kilnd cannot claim its own user again")
	}
	if u.Claim(7, b) {
		t.Error("a second kilnd claimed a user the first has")
	}
	slot, err := FreeSlot(map[uint32]bool{}, func(s uint32) bool { return s != 7 && u.Claim(s, b) })
	if err != nil || slot == 7 || !u.Claim(slot, b) || u.Claim(slot, a) {
		t.Errorf("FreeSlot for the second kilnd: %d, %v", slot, err)
	}
	u.Release(7, b) // not b's: kept
	if u.Claim(7, b) {
		t.Error("a release by another kilnd freed the user")
	}
	u.Release(7, a)
	if !u.Claim(7, b) {
		t.Error("a released user cannot be claimed")
	}
	os.RemoveAll(b)        // its kilnd is gone for good…
	if os.Geteuid() == 0 { // …but a process still runs as the user: not taken over
		sleep := exec.Command("sleep", "30")
		sleep.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: qemuUIDBase + 7, Gid: qemuUIDBase + 7}}
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		if u.Claim(7, a) {
			t.Error("a claim was taken over while a process runs as its user")
		}
		sleep.Process.Kill()
		sleep.Wait()
	}
	if !u.Claim(7, a) {
		t.Error("a claim of a kilnd whose root is gone was not taken over")
	}
	os.WriteFile(filepath.Join(u.claimDir, strconv.Itoa(qemuUIDBase+9)), nil, 0o600) // a kilnd died making it
	if !u.Claim(9, a) {
		t.Error("an empty claim was not taken over")
	}
	if !(Users{}).Claim(7, a) {
		t.Error("a kilnd that is not root claims nothing and is refused nothing")
	}
}
