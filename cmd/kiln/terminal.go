package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// errNotTerminal: the file is not a terminal (a pipe, a file), and stays as it is.
var errNotTerminal = errors.New("not a terminal")

// makeRaw puts the terminal f in raw mode (no echo, no line editing, no signals from
// keys, no output processing: every byte typed is read as it is, Ctrl-C and Ctrl-] too)
// and returns what restores it as it was; restore may be called more than once. A file
// that is not a terminal fails with errNotTerminal.
func makeRaw(f *os.File) (restore func(), err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, errNotTerminal
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("make the terminal raw: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
