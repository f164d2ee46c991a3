package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// TestClockEnv names, in kilnd's environment, a file holding a Go duration (72h,
// -1h30m) that kilnd adds to the real time wherever image lifecycles read the clock:
// deprecation, the cooldown of deregistration protection, recycle bin stays and rule
// locks. It exists for tests, which move time forward by rewriting the file; only
// whoever starts kilnd sets its environment, and kilnd refuses to start when the file
// is not its own user's or others may write it, and ignores such a file at any later
// read, so no caller of the API can move kilnd's clock. kilnd warns at start when it runs with one.
const TestClockEnv = "KILND_TEST_CLOCK"

// testClock is the clock of TestClockEnv, or time.Now when it is not set.
func testClock(ctx context.Context) (func() time.Time, error) {
	path := os.Getenv(TestClockEnv)
	if path == "" {
		return time.Now, nil
	}
	if _, err := readClock(path); err != nil {
		return nil, fmt.Errorf("%s: %w", TestClockEnv, err)
	}
	var last atomic.Int64 // the offset last read: a file being replaced keeps it
	read := func() time.Duration {
		// Checked at every read, on the file opened: what is at the path now may not be
		// what was there at start (a symlink repointed, a file swapped in a directory
		// others may write).
		if d, err := readClock(path); err == nil {
			last.Store(int64(d))
		}
		return time.Duration(last.Load())
	}
	log.G(ctx).WithField("path", path).WithField("offset", read()).Warn("kilnd runs with a test clock (" + TestClockEnv + "): image lifecycles read the time moved by the file's offset")
	return func() time.Time { return time.Now().Add(read()) }, nil
}

// readClock reads the offset in the clock file at path, refusing (errdefs.ErrInvalidArgument)
// a file that is not a regular file of kilnd's user that only it may write.
func readClock(path string) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != uint32(os.Getuid()) || st.Mode().Perm()&0o022 != 0 || !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s must be a regular file of kilnd's user that only it may write: %w", path, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: want a Go duration such as 72h: %w", path, errdefs.ErrInvalidArgument)
	}
	return d, nil
}
