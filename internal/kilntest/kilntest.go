package kilntest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ChildDeadline bounds a short child process of a test (qemu-img, qemu-io, a kilnd that
// must refuse to start, the kiln CLI).
const ChildDeadline = 2 * time.Minute

// Command is exec.Command with a deadline of ChildDeadline: the child is killed when it
// has not ended by then, and Wait does not hang on a grandchild holding its output.
func Command(t testing.TB, argv ...string) *exec.Cmd {
	return CommandWithin(t, ChildDeadline, argv...)
}

// CommandWithin is Command with another deadline (a benchmark's 4 GiB convert).
func CommandWithin(t testing.TB, d time.Duration, argv ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Missing ends a test that lacks something the machine should have (a program 'make
// deps' installs, root): it fails under CI, where nothing may be missing, and is skipped
// elsewhere. The message says what is missing and how to get it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Need returns the path of the program prog (a name looked up in PATH, or a path), or
// ends the test as Missing does.
func Need(t testing.TB, prog string) string {
	t.Helper()
	p, err := exec.LookPath(prog)
	if err != nil {
		Missing(t, "%s is missing: run 'make deps' (%v)", prog, err)
	}
	return p
}

// moduleRoot is the nearest directory at or above the working directory (a test's
// package directory) that holds go.mod.
func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("no go.mod at or above the working directory")
		}
		d = up
	}
}

// Tail is the last n lines of s, saying how many came before.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// tailWindow is how much of a file's end FileTail reads: a console's size counts the
// head kilnd dropped (a hole), which is never read.
const tailWindow = 64 << 10

// FileTail is the last n lines of a file (a console's \r and the NULs of a dropped head
// removed), read from its last 64 KiB only, or why there are none.
func FileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if st.Size() == 0 {
		return "(empty)"
	}
	b := make([]byte, min(st.Size(), tailWindow))
	k, err := f.ReadAt(b, st.Size()-int64(len(b)))
	if k == 0 && err != nil {
		return "(" + err.Error() + ")"
	}
	b, note := b[:k], ""
	if skipped := st.Size() - int64(len(b)); skipped > 0 {
		// The first line read may be partial: drop it, but for what follows a hole.
		first := b[:bytes.IndexByte(b, '\n')+1]
		if i := bytes.LastIndexByte(first, 0); i >= 0 {
			b = b[i+1:]
		} else {
			b = b[len(first):]
		}
		note = fmt.Sprintf("[… the first %d bytes not read]\n", skipped)
	}
	return Tail(note+strings.NewReplacer("\r", "", "\x00", "").Replace(string(b)), n)
}

// Evidence is what a failed wait on a machine shows: the tails of its console and of
// QEMU's log, both in the instance directory dir.
func Evidence(dir string) string {
	return "console:\n" + FileTail(filepath.Join(dir, "console.log"), 40) +
		"\nqemu.log:\n" + FileTail(filepath.Join(dir, "qemu.log"), 20)
}

// OpenFlags are the open(2) flags of a process's descriptor (pid 0: the test's own),
// from /proc/PID/fdinfo.
func OpenFlags(t testing.TB, pid, fd int) int {
	t.Helper()
	proc := "self"
	if pid != 0 {
		proc = strconv.Itoa(pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/fdinfo/%d", proc, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no flags in the fdinfo of descriptor %d of %s", fd, proc)
	return 0
}
