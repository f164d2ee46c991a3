package volumes

import (
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// CheckReadable refuses a descriptor that cannot be read from: one opened with O_PATH
// (fstat works on it, read does not) or write-only. A caller may pass either; without
// this check the first read fails with EBADF, which looks like kiln's fault. The error
// wraps errdefs.ErrInvalidArgument.
func CheckReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	var flags int
	var flagsErr error
	if err := rc.Control(func(fd uintptr) { flags, flagsErr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case flagsErr != nil:
		return fmt.Errorf("descriptor flags: %v: %w", flagsErr, errdefs.ErrInvalidArgument)
	case flags&unix.O_PATH != 0 || flags&unix.O_ACCMODE == unix.O_WRONLY:
		return fmt.Errorf("the file is not open for reading (an O_PATH or write-only descriptor was passed); pass it opened for reading: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}
