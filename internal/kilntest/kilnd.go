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
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build builds the commands pkgs (import paths: kiln/cmd/kilnd, kiln/cmd/kiln) into a
// new directory every user may read (tests run kiln as other users), with -race when the
// tests run under the race detector, so that the daemon is checked as the tests are.
// It is for TestMain, which removes the directory after m.Run. The build is bounded by
// 10 minutes.
func Build(pkgs ...string) (dir string, err error) {
	if dir, err = os.MkdirTemp("", "kiln-bin-"); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	argv := []string{"build", "-o", dir}
	if Race {
		argv = append(argv, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", append(argv, pkgs...)...).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(append(argv, pkgs...), " "), err, out)
	}
	return dir, nil
}

// LockedBuffer is a process's output: written by exec's copying goroutine, read by the
// test. It is safe for concurrent use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ShortDir returns a new directory under /tmp, removed when the test ends, short enough
// for a Unix socket path (108 bytes; t.TempDir() can be too long).
func ShortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// PublicDir is ShortDir that every user may enter (tests that run kiln as other users).
func PublicDir(t testing.TB) string {
	t.Helper()
	d := ShortDir(t)
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// Deadlines of a kilnd process of a test.
const (
	// ServeDeadline bounds a kilnd's start: it answers on its socket by then.
	ServeDeadline = 30 * time.Second
	// ExitDeadline bounds a kilnd's end after SIGTERM or SIGKILL.
	ExitDeadline = 30 * time.Second
	// RaceExit is the status a kilnd built with -race exits with after it reported a
	// data race (GORACE's exitcode), which CheckRaces shows.
	RaceExit = 66
)

// Kilnd is one kilnd process of a test, with its root, socket and settings file. Set
// the fields, then Start; a test may Stop, Kill and Start it again. Its output is Log.
// Methods are called from the test's goroutine only.
type Kilnd struct {
	TB     testing.TB
	Bin    string // the kilnd binary (Build)
	Root   string
	Socket string
	Config string // --config: the settings file
	// Ready answers without error once kilnd serves on Socket (a client's Info).
	Ready func(ctx context.Context) error
	// Wrap goes before kilnd's argv (systemd-socket-activate …); Args after it; Env is
	// added to its environment. LogLevel is --log-level and Accel --accel ("" leaves
	// each out).
	Wrap, Args, Env []string
	LogLevel, Accel string
	// Inherited are descriptors kilnd starts with past stdio (3, 4, …), as a careless
	// parent may leave them.
	Inherited []*os.File

	Cmd  *exec.Cmd     // the running (or last) kilnd
	Log  *LockedBuffer // its stdout and stderr, since the last Start
	Done chan struct{} // closed once it has exited

	racesChecked bool // CheckRaces has looked at this process's ended output
	killAtEnd    bool // Start made the test's end kill kilnd
}

// NewKilnd is a Kilnd (not started) with its root, socket and settings file in dir:
// dir/root, dir/s and dir/kilnd.json.
func NewKilnd(t testing.TB, bin, dir string, ready func(ctx context.Context) error) *Kilnd {
	return &Kilnd{TB: t, Bin: bin, Root: filepath.Join(dir, "root"), Socket: filepath.Join(dir, "s"),
		Config: filepath.Join(dir, "kilnd.json"), Ready: ready}
}

// Start starts kilnd and returns once Ready answers; it fails the test when kilnd exits
// first or does not serve within ServeDeadline, with kilnd's output. kilnd is killed
// when the test ends.
func (k *Kilnd) Start() {
	k.TB.Helper()
	k.Log, k.racesChecked = &LockedBuffer{}, false
	argv := append(append([]string{}, k.Wrap...), k.Bin, "--root", k.Root, "--socket", k.Socket)
	if k.Config != "" {
		argv = append(argv, "--config", k.Config)
	}
	if k.LogLevel != "" {
		argv = append(argv, "--log-level", k.LogLevel)
	}
	if k.Accel != "" {
		argv = append(argv, "--accel", k.Accel)
	}
	argv = append(argv, k.Args...)
	// Not CommandContext: a test stops its kilnd itself (Stop, Kill), and a restart must
	// not end with the request that made it.
	k.Cmd = exec.Command(argv[0], argv[1:]...)
	k.Cmd.Stdout, k.Cmd.Stderr = k.Log, k.Log
	k.Cmd.Env = append(os.Environ(), k.Env...)
	k.Cmd.ExtraFiles = k.Inherited
	if err := k.Cmd.Start(); err != nil {
		k.TB.Fatal(err)
	}
	cmd, done := k.Cmd, make(chan struct{})
	k.Done = done
	go func() { cmd.Wait(); close(done) }()
	if !k.killAtEnd { // once: a cleanup of the test's that stops kilnd must run before it
		k.killAtEnd = true
		k.TB.Cleanup(k.Kill)
	}
	deadline := time.Now().Add(ServeDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := k.Ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-k.Done:
			k.TB.Fatalf("kilnd exited: %v\n%s", k.Cmd.ProcessState, k.Log)
		default:
		}
		if time.Now().After(deadline) {
			k.TB.Fatalf("kilnd did not serve within %s: %v\n%s", ServeDeadline, err, k.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops kilnd with SIGTERM and waits for it (at most ExitDeadline), then fails the
// test if kilnd reported a data race.
func (k *Kilnd) Stop() {
	k.TB.Helper()
	k.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.Done:
	case <-time.After(ExitDeadline):
		k.TB.Fatalf("kilnd did not stop within %s of SIGTERM\n%s", ExitDeadline, k.Log)
	}
	k.CheckRaces()
}

// Kill stops kilnd with SIGKILL, as a crash would, and waits for it. It may be called
// again.
func (k *Kilnd) Kill() {
	k.Cmd.Process.Kill()
	select {
	case <-k.Done:
	case <-time.After(ExitDeadline):
		k.TB.Errorf("kilnd %d did not die of SIGKILL within %s", k.Cmd.Process.Pid, ExitDeadline)
	}
	k.CheckRaces()
}

// Restart is Stop, then Start.
func (k *Kilnd) Restart() {
	k.TB.Helper()
	k.Stop()
	k.Start()
}

// CheckRaces fails the test when kilnd, built with -race, reported a data race: once
// per process, when it has exited (Stop, Kill).
func (k *Kilnd) CheckRaces() {
	select {
	case <-k.Done:
		if k.racesChecked {
			return
		}
		k.racesChecked = true
	default:
	}
	if s := k.Log.String(); strings.Contains(s, "WARNING: DATA RACE") {
		k.TB.Errorf("kilnd reported a data race:\n%s", s[strings.Index(s, "WARNING: DATA RACE"):])
	}
}

// KillQEMUs kills every QEMU of the kilnd's instances: they outlive kilnd by design, so
// a test cleans up after them itself.
func (k *Kilnd) KillQEMUs() {
	pids, _ := filepath.Glob(filepath.Join(k.Root, "instances", "*", "qemu.pid"))
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Evidence is what a failed wait on the instances ids shows (all of the kilnd's when
// none is named): the tails of each one's console and QEMU's log, and of kilnd's log
// without the lines of requests (the test's own polling).
func (k *Kilnd) Evidence(ids ...string) string {
	var lines []string
	for _, l := range strings.Split(k.Log.String(), "\n") {
		if !strings.Contains(l, `msg="request done"`) {
			lines = append(lines, l)
		}
	}
	return InstancesEvidence(k.Root, ids...) + "kilnd log:\n" + Tail(strings.Join(lines, "\n"), 30)
}

// InstancesEvidence is the tails of the console and QEMU's log of the instances ids
// under a kilnd's root, or of all of them when none is named.
func InstancesEvidence(root string, ids ...string) string {
	if len(ids) == 0 {
		dirs, _ := filepath.Glob(filepath.Join(root, "instances", "*"))
		for _, d := range dirs {
			ids = append(ids, filepath.Base(d))
		}
		if len(ids) == 0 {
			return "(no instances)\n"
		}
	}
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "instance %s\n%s\n", id, Evidence(filepath.Join(root, "instances", id)))
	}
	return b.String()
}

// QEMUAlive says whether pid is a running QEMU (not another process that took its pid).
func QEMUAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(b, []byte("qemu-system"))
}
