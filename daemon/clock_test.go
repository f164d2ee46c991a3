package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTestClockOnlyKilndsFile: the test clock (KILND_TEST_CLOCK) follows the file
// kilnd's user writes, and nothing another user put at its path since start: a file
// swapped in (through a directory others may write, or a symlink another user
// repoints) does not move kilnd's clock, though the file at start passed the check.
func TestTestClockOnlyKilndsFile(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to make a file of another user's")
	}
	const nobody = 65534
	dir := t.TempDir()
	mine := filepath.Join(dir, "mine")
	write := func(path, offset string, uid int, mode os.FileMode) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(offset), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tmp, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tmp, uid, uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	// far says whether the clock reads about 1000h ahead.
	far := func(now func() time.Time) bool { return time.Until(now()) > 999*time.Hour }

	write(mine, "0s", 0, 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(mine, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		swap func()
	}{
		{"replaced by another user's file", mine, func() { write(mine, "1000h", nobody, 0o600) }},
		{"replaced by a file others may write", mine, func() { write(mine, "1000h", 0, 0o666) }},
		{"symlink repointed to another user's file", link, func() {
			theirs := filepath.Join(dir, "theirs")
			write(theirs, "1000h", nobody, 0o600)
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(theirs, link); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(mine, "0s", 0, 0o600)
			if err := os.Remove(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(mine, link); err != nil {
				t.Fatal(err)
			}
			t.Setenv(TestClockEnv, tc.path)
			now, err := testClock(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if far(now) {
				t.Fatal("the clock is ahead before any change")
			}
			tc.swap()
			if far(now) {
				t.Errorf("the clock moved 1000h ahead by a file kilnd's user did not write")
			}
		})
	}
	// kilnd's own file still moves it.
	write(mine, "0s", 0, 0o600)
	t.Setenv(TestClockEnv, mine)
	now, err := testClock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	write(mine, "1000h", 0, 0o600)
	if !far(now) {
		t.Errorf("kilnd's own file did not move its clock")
	}
}
