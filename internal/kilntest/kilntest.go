package kilntest

import (
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

// FileTail is the last n lines of a file (a console's \r removed), or why there are
// none.
func FileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return Tail(strings.ReplaceAll(string(b), "\r", ""), n)
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
