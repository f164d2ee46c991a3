package kilntest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Process is a process of the machine, as /proc shows it.
type Process struct {
	PID  int
	Comm string // its command name
}

func (p Process) String() string { return fmt.Sprintf("%d (%s)", p.PID, p.Comm) }

// ProcessesAs lists the processes that have uid as any of their user ids (real,
// effective, saved or file system): what runs as a caller, or is left of it.
func ProcessesAs(uid uint32) []Process {
	var out []Process
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		st, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(st), "\n") {
			rest, ok := strings.CutPrefix(line, "Uid:")
			if !ok {
				continue
			}
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.ParseUint(f, 10, 32); err == nil && uint32(n) == uid {
					pid, _ := strconv.Atoi(filepath.Base(d))
					comm, _ := os.ReadFile(filepath.Join(d, "comm"))
					out = append(out, Process{PID: pid, Comm: strings.TrimSpace(string(comm))})
					break
				}
			}
			break
		}
	}
	return out
}

// Descriptors is how many descriptors the process pid holds open.
func Descriptors(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Open opens path with flags (open(2)'s, O_CLOEXEC added; O_PATH and a FIFO's O_RDWR
// included) as a caller might before passing it, and closes it when the test ends.
func Open(t testing.TB, path string, flags int) *os.File {
	t.Helper()
	fd, err := syscall.Open(path, flags|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	t.Cleanup(func() { f.Close() })
	return f
}
