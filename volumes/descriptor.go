package volumes

import (
	"fmt"
	"os"
	"syscall"

	"github.com/containerd/errdefs"
)

// oPath is Linux's O_PATH, which package syscall does not name.
const oPath = 0x200000

// CheckReadable refuses a descriptor that cannot be read from: one opened with O_PATH
// (fstat works on it, read does not) or write-only. A caller may pass either; without
// this check the first read fails with EBADF, which looks like kiln's fault. The error
// wraps errdefs.ErrInvalidArgument.
func CheckReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	}); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case errno != 0:
		return fmt.Errorf("descriptor flags: %v: %w", errno, errdefs.ErrInvalidArgument)
	case flags&oPath != 0 || flags&syscall.O_ACCMODE == syscall.O_WRONLY:
		return fmt.Errorf("the file is not open for reading (an O_PATH or write-only descriptor was passed); pass it opened for reading: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}
