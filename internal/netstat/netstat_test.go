package netstat

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"kiln/internal/kilntest"
)

// TestParse reads tables recorded on Linux 6.18, x86_64, as `cat /proc/net/tcp` and
// `cat /proc/net/tcp6` print them while a process of uid 2000000005 held: a listener
// on 127.0.0.1:37119 with one connection to it (and another whose client end waits in
// TIME_WAIT), a dual-stack listener on [::]:57401 reached from 127.0.0.1, and a
// listener on [::1]:46285 with one connection.
func TestParse(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the tables were recorded on a little-endian machine")
	}
	const uid = 2000000005
	lo := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) }
	lo6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.IPv6Loopback(), port) }
	mapped := func(port uint16) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), port)
	}
	any4 := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	any6 := netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	for _, tc := range []struct {
		table string
		want  []Socket
	}{
		{"testdata/tcp", []Socket{
			{lo(37119), any4, Listen, uid, 1766612},
			{lo(59968), lo(57401), Established, uid, 1766618},
			{lo(48094), lo(37119), Established, uid, 1766613},
			{lo(48110), lo(37119), TimeWait, 0, 0},
			{lo(37119), lo(48094), Established, uid, 1766614},
		}},
		{"testdata/tcp6", []Socket{
			{netip.AddrPortFrom(netip.IPv6Unspecified(), 57401), any6, Listen, uid, 1766617},
			{lo6(46285), any6, Listen, uid, 1766620},
			{lo6(40176), lo6(46285), Established, uid, 1766621},
			{lo6(46285), lo6(40176), Established, uid, 1766622},
			{mapped(57401), mapped(59968), Established, uid, 1766619},
		}},
	} {
		f, err := os.Open(tc.table)
		if err != nil {
			t.Fatal(err)
		}
		var got []Socket
		err = Parse(f, func(s Socket) { got = append(got, s) })
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.table, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %d sockets, want %d: %+v", tc.table, len(got), len(tc.want), got)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s line %d: %+v, want %+v", tc.table, i+2, got[i], tc.want[i])
			}
		}
	}
}

// TestParseRefuses: a line the kernel would not print ends the table with an error of
// class InvalidArgument.
func TestParseRefuses(t *testing.T) {
	for _, line := range []string{
		"0: 0100007F:A049 00000000:0000 0A",                                         // too few fields
		"0: 0100007F:A04 00000000:0000 0A 0:0 0:0 0 0 0 1",                          // port of 3 digits
		"0: 0100007F0:A049 00000000:0000 0A 0:0 0:0 0 0 0 1",                        // address of 9 digits
		"0: 0100007G:A049 00000000:0000 0A 0:0 0:0 0 0 0 1",                         // not hex
		"0: 0100007F:A049 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 1", // two families
		"0: 0100007F:A049 00000000:0000 0A 0:0 0:0 0 -1 0 1",                        // uid
		"0: 0100007F:A049 00000000:0000 0A 0:0 0:0 0 4294967296 0 1",                // uid past 32 bits
		"0: 0100007F:A049 00000000:0000 1FF 0:0 0:0 0 0 0 1",                        // state
		"0: 0100007F:A049 00000000:0000 0A 0:0 0:0 0 0 0 x",                         // inode
	} {
		err := Parse(strings.NewReader("  sl  local_address rem_address   st\n"+line+"\n"), func(Socket) {
			t.Errorf("%q: parsed", line)
		})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v; want invalid, naming line 2", line, err)
		}
	}
	if err := Read("sctp", func(Socket) {}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Read(sctp): %v; want invalid", err)
	}
}

// FuzzParse: any text parses or fails with InvalidArgument, and never panics; what it
// parses has two addresses of one family.
func FuzzParse(f *testing.F) {
	for _, table := range []string{"testdata/tcp", "testdata/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("0: 0100007F:A049 00000000:0000 0A 0:0 0:0 0 0 0 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Parse(bytes.NewReader(b), func(s Socket) {
			if s.Local.Addr().Is4() != s.Remote.Addr().Is4() || !s.Local.IsValid() || !s.Remote.IsValid() {
				t.Fatalf("parsed %+v", s)
			}
		})
		if err != nil && !errdefs.IsInvalidArgument(err) && !errors.Is(err, bufio.ErrTooLong) {
			t.Fatalf("error of another class: %v", err)
		}
	})
}

// TestOwner: the owner of the far end of an accepted connection is the uid of the
// process that connected: a shell run as uid 2100000005 (past kiln's QEMU users, whose
// connections to loopback kilnd's firewall refuses), this test's own uid over IPv6; a
// remote that is not the far end's finds no one, nor does a listener.
func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		kilntest.Missing(t, "TestOwner runs a client as another uid: run it as root")
	}
	bash := kilntest.Need(t, "bash")
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const uid = 2_100_000_005
	port := l.Addr().(*net.TCPAddr).Port
	cmd := kilntest.Command(t, bash, "-c", `exec 3<>/dev/tcp/127.0.0.1/"$1" && { read -r _ || :; }`, "client", strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("the client as uid %d: %v: %s", uid, err, stderr.String())
		}
	}()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		stdin.Close()
		t.Fatalf("no connection from the client as uid %d: %v (its end: %v: %s)", uid, err, cmd.Wait(), stderr.String())
	}
	defer c.Close()
	local, remote := addrPort(t, c.LocalAddr()), addrPort(t, c.RemoteAddr())
	if got, err := Owner(remote, local); err != nil || got != uid {
		t.Errorf("Owner(%s, %s): %d, %v; want %d (the shell's)", remote, local, got, err, uid)
	}
	// The tables say the same. A table read while sockets come and go can show a line
	// more than once (its reads resume at a bucket and an index), never another owner.
	var inTable []uint32
	if err := Read("tcp", func(s Socket) {
		if s.Local == remote && s.Remote == local {
			inTable = append(inTable, s.UID)
		}
	}); err != nil || len(inTable) == 0 || slices.ContainsFunc(inTable, func(u uint32) bool { return u != uid }) {
		t.Errorf("the socket from %s to %s in /proc/net/tcp: owners %v, %v; want %d", remote, local, inTable, err, uid)
	}
	other := netip.MustParseAddrPort("169.254.169.254:80")
	if got, err := Owner(remote, other, local); err != nil || got != uid {
		t.Errorf("Owner(%s, %s or %s): %d, %v; want %d", remote, other, local, got, err, uid)
	}
	if got, err := Owner(remote, other); !errdefs.IsNotFound(err) {
		t.Errorf("Owner(%s, %s) of a socket to %s: %d, %v; want not found", remote, other, local, got, err)
	}
	if got, err := Owner(local, netip.AddrPortFrom(netip.IPv4Unspecified(), 0)); !errdefs.IsNotFound(err) {
		t.Errorf("Owner of the listener %s: %d, %v; want not found (a listener is no one's peer)", local, got, err)
	}

	// IPv6, and the IPv4-mapped form of an IPv4 address is that address.
	l6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l6.Close()
	d, err := net.Dial("tcp6", l6.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c6, err := l6.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	if got, err := Owner(addrPort(t, c6.RemoteAddr()), addrPort(t, c6.LocalAddr())); err != nil || got != uint32(os.Geteuid()) {
		t.Errorf("Owner over IPv6: %d, %v; want %d", got, err, os.Geteuid())
	}
	mapped := netip.AddrPortFrom(netip.AddrFrom16(remote.Addr().As16()), remote.Port())
	if got, err := Owner(mapped, local); err != nil || got != uid {
		t.Errorf("Owner(%s, %s): %d, %v; want %d", mapped, local, got, err, uid)
	}
}

// TestOwnerTimeWait: the end of a connection that waits in TIME_WAIT (which the tables
// show as uid 0's) is no one's.
func TestOwnerTimeWait(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	from, to := addrPort(t, d.LocalAddr()), addrPort(t, c.LocalAddr())
	d.Close() // the side that closes first waits
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the client closed: %v", err)
	}
	c.Close()
	state := func() (st State) {
		_ = Read("tcp", func(s Socket) {
			if s.Local == from && s.Remote == to {
				st = s.State
			}
		})
		return st
	}
	kilntest.Poll(t, 10*time.Second, "the client's end in TIME_WAIT", func() bool { return state() == TimeWait },
		func() string { return fmt.Sprintf("state %#x", state()) })
	if got, err := Owner(from, to); !errdefs.IsNotFound(err) {
		t.Errorf("Owner of %s to %s in TIME_WAIT: %d, %v; want not found", from, to, got, err)
	}
}

// BenchmarkOwner asks the kernel for one socket; BenchmarkRead reads the IPv4 table,
// the whole of it, as Owner would have to otherwise.
func BenchmarkOwner(b *testing.B) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	d, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	from, to := d.LocalAddr().(*net.TCPAddr).AddrPort(), l.Addr().(*net.TCPAddr).AddrPort()
	for b.Loop() {
		if _, err := Owner(from, to); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	for b.Loop() {
		if err := Read("tcp", func(Socket) {}); err != nil {
			b.Fatal(err)
		}
	}
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		t.Fatalf("%v is not a TCP address", a)
	}
	return tcp.AddrPort()
}
