package main

import (
	"errors"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMakeRaw: on a real terminal (a pty's follower side), makeRaw turns off echo, line
// editing, the keys' signals and output processing, and restore brings the terminal back
// exactly; a pipe is left alone (errNotTerminal).
func TestMakeRaw(t *testing.T) {
	_, tty := openPTY(t)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) == 0 {
		t.Fatalf("a new pty is already raw (lflag %#x): the test proves nothing", before.Lflag)
	}
	restore, err := makeRaw(tty)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG|unix.IEXTEN) != 0 || raw.Iflag&(unix.ICRNL|unix.IXON) != 0 ||
		raw.Oflag&unix.OPOST != 0 || raw.Cc[unix.VMIN] != 1 {
		t.Errorf("not raw: lflag %#x iflag %#x oflag %#x vmin %d", raw.Lflag, raw.Iflag, raw.Oflag, raw.Cc[unix.VMIN])
	}
	restore()
	restore() // twice is harmless
	after, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if *after != *before {
		t.Errorf("restored terminal %+v, want %+v", *after, *before)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := makeRaw(r); !errors.Is(err, errNotTerminal) {
		t.Errorf("makeRaw of a pipe: %v, want errNotTerminal", err)
	}
}

// openPTY opens a pseudo-terminal: its leader (what a terminal emulator holds) and its
// follower (the terminal a program reads), both closed when the test ends.
func openPTY(t *testing.T) (leader, tty *os.File) {
	t.Helper()
	leader, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	t.Cleanup(func() { leader.Close() })
	if err := unix.IoctlSetPointerInt(int(leader.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(leader.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return leader, tty
}
