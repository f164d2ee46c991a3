package console

import (
	"fmt"
	"io"
	"os"
	"time"
)

// BootLine is the line kilnd writes to an instance's console before its QEMU starts
// (launch, start after a stop) and after a reboot it carried out, so that a reader sees
// where each boot begins:
//
//	-- kiln: boot 3 at 2026-11-30T10:00:00Z (i-0123456789abcdef0) --
//
// It is made of kilnd's words only (a count, a time, the instance's id, which ids.Valid
// has checked), never of the user's or the guest's, so no ready line can come of it; and
// the boot's ConsoleStart is set past it, so readiness never reads it anyway. A guest can
// print a line that looks the same: kilnd never reads these lines back, they are for
// people. The line ends as the guest's own lines do (\r\n).
func BootLine(boot int, at time.Time, id string, reboot bool) string {
	what := "boot"
	if reboot {
		what = "reboot"
	}
	return fmt.Sprintf("-- kiln: %s %d at %s (%s) --\r\n", what, boot, at.UTC().Format(time.RFC3339), id)
}

// WriteBootLine appends line to the console at path (made when missing, 0600), on a line
// of its own (after a line break when the console does not end with one: the last boot
// may have stopped in the middle of a line, a shell's prompt say), and returns the
// console's size after it: where the boot's own output begins (ConsoleStart).
func WriteBootLine(path, line string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			line = "\r\n" + line
		}
	}
	if _, err := io.WriteString(f, line); err != nil {
		return 0, fmt.Errorf("write the boot line to %s: %w", path, err)
	}
	// O_APPEND: the write landed at the end, whatever the size was; the offset is
	// where it ended.
	return f.Seek(0, io.SeekCurrent)
}
