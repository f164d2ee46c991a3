package netstat

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// State is a TCP socket's state as the tables show it (include/net/tcp_states.h); a UDP
// socket shows Established when connected, Close when not.
type State uint8

// The states the callers look at.
const (
	Established State = 0x01
	TimeWait    State = 0x06
	Close       State = 0x07
	Listen      State = 0x0A
)

// Socket is one line of a table.
type Socket struct {
	Local, Remote netip.AddrPort // an IPv4 table's are IPv4, an IPv6 table's IPv6 (::ffff:a.b.c.d for IPv4 on a dual-stack socket)
	State         State
	UID           uint32 // the owner: the fsuid of who made the socket (0 for a socket in TIME_WAIT)
	Inode         uint64 // the socket's inode, as /proc/PID/fd/N names it: socket:[INODE]
}

// Parse reads a table in the kernel's format (a heading, then one socket a line) and
// calls fn for each socket. A line it cannot read ends it with an error of class
// InvalidArgument naming the line.
func Parse(r io.Reader, fn func(Socket)) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] == "sl" {
			continue
		}
		s, err := parseLine(f)
		if err != nil {
			return fmt.Errorf("socket table line %d: %w: %w", n, err, errdefs.ErrInvalidArgument)
		}
		fn(s)
	}
	return sc.Err()
}

func parseLine(f []string) (Socket, error) {
	var s Socket
	if len(f) < 10 {
		return s, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	var err error
	if s.Local, err = parseAddr(f[1]); err != nil {
		return s, err
	}
	if s.Remote, err = parseAddr(f[2]); err != nil {
		return s, err
	}
	if s.Local.Addr().Is4() != s.Remote.Addr().Is4() {
		return s, fmt.Errorf("local %s and remote %s of two families", f[1], f[2])
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return s, fmt.Errorf("state %q", f[3])
	}
	uid, err := strconv.ParseUint(f[7], 10, 32)
	if err != nil {
		return s, fmt.Errorf("uid %q", f[7])
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return s, fmt.Errorf("inode %q", f[9])
	}
	s.State, s.UID, s.Inode = State(st), uint32(uid), inode
	return s, nil
}

// parseAddr reads ADDR:PORT as the kernel prints them: the address as 32-bit words in
// the host's byte order, each in 8 hex digits (one for IPv4, four for IPv6), the port
// as a number in 4 hex digits.
func parseAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || len(hexPort) != 4 || (len(hexAddr) != 8 && len(hexAddr) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port", s)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	var b [16]byte
	for i := 0; i < len(raw); i += 4 { // each word: printed big-endian, stored in host order
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	if len(raw) == 4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(port)), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(port)), nil
}

// Read calls fn for each socket of proto ("tcp" or "udp") in this network namespace:
// IPv4's table, then IPv6's. A table the kernel does not have (no IPv6) is passed over.
func Read(proto string, fn func(Socket)) error {
	if proto != "tcp" && proto != "udp" {
		return fmt.Errorf("socket table %q: want tcp or udp: %w", proto, errdefs.ErrInvalidArgument)
	}
	for _, table := range []string{"/proc/net/" + proto, "/proc/net/" + proto + "6"} {
		f, err := os.Open(table)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		err = Parse(f, fn)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", table, err)
		}
	}
	return nil
}
