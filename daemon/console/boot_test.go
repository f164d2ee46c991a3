package console

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTail: the reader sends the console's last n lines, counting the guest's \r\n
// lines, a last line not ended yet, a chunk boundary inside the lines, and a ring whose
// head was punched (it never reaches back before the ring's start, nor sends zeros).
func TestTail(t *testing.T) {
	dir := t.TempDir()
	tail := func(content []byte, n int, limit int64, punch int64) string {
		t.Helper()
		path := filepath.Join(dir, "console.log")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if punch > 0 {
			if err := punchHead(f, 0, punch); punchUnsupported(err) {
				t.Skipf("the filesystem cannot punch holes: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}
		}
		r := NewReader(f, func() int64 { return limit })
		if err := r.Tail(n); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := r.CopyTo(&out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	five := []byte("one\r\ntwo\r\nthree\r\nfour\r\nfive\r\n")
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, ""},
		{1, "five\r\n"},
		{2, "four\r\nfive\r\n"},
		{5, string(five)},
		{6, string(five)},
		{1000, string(five)},
	} {
		if got := tail(five, tc.n, 1<<20, 0); got != tc.want {
			t.Errorf("tail %d: %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := tail([]byte("a\nb\nprompt # "), 1, 1<<20, 0); got != "prompt # " {
		t.Errorf("a last line not ended: %q", got)
	}
	if got := tail([]byte("a\nb\nprompt # "), 2, 1<<20, 0); got != "b\nprompt # " {
		t.Errorf("two lines, the last not ended: %q", got)
	}
	if got := tail([]byte("\n\n\n"), 2, 1<<20, 0); got != "\n\n" {
		t.Errorf("empty lines: %q", got)
	}

	// Lines over several chunks; the 3000 last of 20000 (each 30 bytes: 90 KB, over a chunk).
	var big bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&big, "console line number %08d\r\n", i)
	}
	got := tail(big.Bytes(), 3000, 1<<30, 0)
	lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n")
	if len(lines) != 3000 || lines[0] != "console line number 00017000" || lines[2999] != "console line number 00019999" {
		t.Errorf("tail 3000 of 20000: %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	// A ring of the last 64 KiB, its head (the first 128 KiB) punched: more lines asked
	// for than it holds gives what it holds, whole lines after the first, no zeros.
	got = tail(big.Bytes(), 20000, 64<<10, 128<<10)
	if strings.ContainsRune(got, 0) || len(got) > 64<<10 || !strings.HasSuffix(got, "console line number 00019999\r\n") {
		t.Errorf("tail of a ring: %d bytes, zeros %v, ends %q", len(got), strings.ContainsRune(got, 0), got[max(0, len(got)-40):])
	}
}

// TestBootLine: kilnd's boot lines never read as a guest's ready line, whatever the
// count and time, and WriteBootLine puts one on a line of its own and returns where the
// boot's own output begins.
func TestBootLine(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	line := BootLine(3, at, "i-0123456789abcdef0", false)
	if line != "-- kiln: boot 3 at 2026-11-30T09:00:00Z (i-0123456789abcdef0) --\r\n" {
		t.Errorf("boot line %q", line)
	}
	if r := BootLine(3, at, "i-0123456789abcdef0", true); !strings.HasPrefix(r, "-- kiln: reboot 3 at ") {
		t.Errorf("reboot line %q", r)
	}
	for _, n := range []int{0, 1, 99999} {
		for _, reboot := range []bool{false, true} {
			if l := BootLine(n, at, "i-ffffffffffffffff0", reboot); readyIn([]byte(l)) || ReadyMarker.MatchString(l) {
				t.Errorf("%q reads as a ready line", l)
			}
		}
	}

	path := filepath.Join(t.TempDir(), "console.log")
	end, err := WriteBootLine(path, line)
	if err != nil || end != int64(len(line)) {
		t.Fatalf("first boot line: end %d, %v", end, err)
	}
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("KILN-GUEST ready\r\n/ # ") // the last boot ended in its prompt
	f.Close()
	end, err = WriteBootLine(path, line)
	b, _ := os.ReadFile(path)
	if err != nil || end != int64(len(b)) || !strings.HasSuffix(string(b), "/ # \r\n"+line) {
		t.Errorf("second boot line: end %d of %d, %v\n%q", end, len(b), err, b)
	}
}

// TestRelay: the client's bytes reach the guest; the guest's output reaches the client,
// all of it when the guest ends first; a client that detaches ends the relay and
// closes the guest's side; and a client that does not read does not hold the guest
// back (its output is read, and what the client missed is counted).
func TestRelay(t *testing.T) {
	guest, guestEnd := net.Pipe()
	client, clientEnd := net.Pipe()
	done := make(chan int64, 1)
	go func() { done <- Relay(t.Context(), guestEnd, clientEnd) }()

	go client.Write([]byte("echo hi\n"))
	b := make([]byte, 64)
	guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.ReadAtLeast(guest, b, len("echo hi\n"))
	if err != nil || string(b[:n]) != "echo hi\n" {
		t.Fatalf("guest read %q, %v", b[:n], err)
	}
	go func() {
		guest.Write([]byte("hi\r\n"))
		guest.Close() // QEMU exited: what it wrote still reaches the client
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(client)
	if string(all) != "hi\r\n" || err != nil {
		t.Errorf("client read %q, %v; want the guest's output, then EOF", all, err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end when the guest's side closed")
	}

	// A client that never reads: the guest writes far more than the queue holds
	// without blocking, and the relay counts what the client missed; the client's
	// detach ends it.
	guest, guestEnd = net.Pipe()
	client, clientEnd = net.Pipe()
	go func() { done <- Relay(t.Context(), guestEnd, clientEnd) }()
	chunk := bytes.Repeat([]byte("x"), relayChunk)
	guest.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for i := range 2 * relayQueue {
		if _, err := guest.Write(chunk); err != nil {
			t.Fatalf("the guest's write %d blocked on a client that does not read: %v", i, err)
		}
	}
	client.Close()
	guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := guest.Read(b); err != io.EOF {
		t.Errorf("after the client detached, the guest's side reads %v, want EOF", err)
	}
	select {
	case missed := <-done:
		if missed < int64(relayQueue-2)*relayChunk {
			t.Errorf("the client missed %d bytes, want at least %d", missed, (relayQueue-2)*relayChunk)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end when the client detached")
	}
}

// TestRelayDetachDrains: a client that sends a line and detaches at once still has all
// of it reach the guest's side, which sees the end of input only after it (a half-close,
// not a close: QEMU drops what it has not read when the connection closes), and can
// still write (its output is read on) until it closes its side.
func TestRelayDetachDrains(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	guestEnd, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer qemu.Close()
	client, clientEnd := net.Pipe()
	done := make(chan struct{})
	go func() { Relay(t.Context(), guestEnd, clientEnd); close(done) }()
	client.Write([]byte("poweroff\n"))
	client.Close()
	qemu.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(qemu) // to the end of input
	if string(got) != "poweroff\n" || err != nil {
		t.Fatalf("the guest's side read %q, %v; want the line, then the end", got, err)
	}
	if _, err := qemu.Write([]byte("bye\r\n")); err != nil {
		t.Errorf("the guest's side cannot write after the client detached (closed, not half-closed): %v", err)
	}
	qemu.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end once the guest's side closed")
	}
}

// TestRelayEndsWithoutTheClient: once the guest's side has ended (QEMU exited), a client
// that neither reads nor closes is closed after relayDrain; the relay does not wait on it.
func TestRelayEndsWithoutTheClient(t *testing.T) {
	defer func(d time.Duration) { relayDrain = d }(relayDrain)
	relayDrain = 200 * time.Millisecond
	guest, guestEnd := net.Pipe()
	_, clientEnd := net.Pipe() // never read, never closed by the client
	done := make(chan struct{})
	go func() { Relay(t.Context(), guestEnd, clientEnd); close(done) }()
	guest.Write([]byte("last words\r\n")) // read by the relay, queued for a client that never reads
	guest.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay still waits on a client that does not read, 5 s after the guest's side ended")
	}
}
