package kilntest

import (
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Datagrams listens on a unixgram socket, as journald and the service manager do (for
// sd_notify), and returns its path and what arrives; the channel is closed once the
// listener is, when the test ends. A datagram that passes a file descriptor instead of
// a payload (a journal entry too big for a datagram) arrives as that file's content, as
// journald reads it.
func Datagrams(t testing.TB) (string, <-chan []byte) {
	t.Helper()
	path := filepath.Join(ShortDir(t), "socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch, done := make(chan []byte, 256), make(chan struct{})
	t.Cleanup(func() { close(done); c.Close() })
	go func() {
		defer close(ch)
		buf, oob := make([]byte, 1<<16), make([]byte, syscall.CmsgSpace(4))
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			if fd, ok := passedFD(oob[:oobn]); ok {
				f := os.NewFile(uintptr(fd), "entry")
				b, _ = io.ReadAll(io.NewSectionReader(f, 0, math.MaxInt64))
				f.Close()
			}
			select {
			case ch <- b:
			case <-done: // the test is over: nobody reads
				return
			}
		}
	}()
	return path, ch
}

// passedFD is the descriptor a datagram's control message passes, if any.
func passedFD(oob []byte) (int, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) == 0 {
		return 0, false
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) == 0 {
		return 0, false
	}
	return fds[0], true
}

// NextDatagram is the next datagram of ch (Datagrams); it fails the test after d, or
// once the listener is closed, saying what it waited for.
func NextDatagram(t testing.TB, ch <-chan []byte, d time.Duration, what string) []byte {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the listener closed", what)
		}
		return b
	case <-time.After(d):
		t.Fatalf("%s: nothing arrived within %s", what, d)
		return nil
	}
}
