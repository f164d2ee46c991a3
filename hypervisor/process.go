package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kiln/hypervisor/qmp"
)

// Machine is a running QEMU process with its QMP connection. QEMU runs in its own
// session, detached from kilnd, so it outlives kilnd; a new kilnd reattaches with
// Attach. A Machine is safe for concurrent use. Its methods are the only way to talk
// to QEMU: QMP, its commands, events and block node names stay inside this package.
type Machine struct {
	Dir string
	PID int

	client *qmp.Client // QMP

	// blockMu serializes changes of the block graph (Snapshot, AttachDisk,
	// DetachDisk) and guards depths.
	blockMu sync.Mutex
	// depths is how many files each disk's chain has in QEMU, by disk id: known from
	// the spec at Start and kept by the changes; a disk missing here (after Attach, or
	// a change that failed half-way) is looked up in QEMU's block nodes.
	depths map[string]int

	exited chan struct{} // closed once the process is gone
	proc   *os.Process

	agentMu sync.Mutex
	agent   *Agent // the guest agent's connection, dialled on first use

	consoleMu   sync.Mutex
	consoleFree chan struct{} // holds a token while no DialConsole connection is open

	failOnce sync.Once
	failed   chan struct{} // closed once Watch saw the guest fail
	failure  string        // why; set before failed is closed
}

// newMachine is a Machine of the QEMU process pid in dir, not yet connected.
func newMachine(dir string, pid int, proc *os.Process) *Machine {
	return &Machine{Dir: dir, PID: pid, proc: proc, depths: map[string]int{}, exited: make(chan struct{}), failed: make(chan struct{})}
}

// Failed is closed once Watch has seen the guest fail (a panic, a stop on an internal
// error): a stop under way need not wait for it to shut down.
func (m *Machine) Failed() <-chan struct{} { return m.failed }

// Failure is why the guest failed, once Failed is closed, and "" before.
func (m *Machine) Failure() string {
	select {
	case <-m.failed:
		return m.failure
	default:
		return ""
	}
}

// markFailed records the guest's failure, once.
func (m *Machine) markFailed(reason string) {
	m.failOnce.Do(func() { m.failure = reason; close(m.failed) })
}

// Start starts QEMU (the binary qemu) for spec, detached in its own session, as
// spec.User, and returns once its QMP socket answers. kilnd opens every file QEMU uses
// (Passed): the console, the QMP listener, QEMU's own log (Dir/qemu.log, its stdout and
// stderr), each disk file. If QEMU exits first, the error carries its argv and the end
// of its log.
func Start(ctx context.Context, qemu string, spec Spec) (_ *Machine, err error) {
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return nil, err
	}
	var p Passed
	defer p.Close()
	if p.console, err = os.OpenFile(filepath.Join(spec.Dir, ConsoleFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return nil, err
	}
	if p.consoleSock, err = listen(filepath.Join(spec.Dir, ConsoleSocket)); err != nil {
		return nil, err
	}
	sock := filepath.Join(spec.Dir, QMPSocket)
	if p.qmp, err = listen(sock); err != nil {
		return nil, err
	}
	if p.agent, err = listen(filepath.Join(spec.Dir, AgentSocket)); err != nil {
		return nil, err
	}
	if spec.TPM != nil {
		if p.tpm, err = startTPM(spec.Dir, spec.TPM, spec.User); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil { // a swtpm whose QEMU never connected does not end by itself
				StopTPM(spec.Dir)
			}
		}()
	}
	args, err := spec.Args(&p)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(spec.Dir, LogFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	start, _ := logf.Seek(0, 2)
	// Not CommandContext: QEMU outlives the request and kilnd itself.
	cmd := exec.Command(qemu, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = p.files
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // nothing of kilnd's
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{
		Uid: spec.User.UID, Gid: spec.User.GID, Groups: append([]uint32{}, spec.User.Groups...)}}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", qemu, err)
	}
	m := newMachine(spec.Dir, cmd.Process.Pid, cmd.Process)
	for _, d := range spec.Disks {
		m.depths[d.ID] = len(d.Files)
	}
	go func() { // the one reaper of this child
		if err := cmd.Wait(); err != nil {
			appendLog(logPath, fmt.Sprintf("kilnd: QEMU %d exited: %v\n", m.PID, err))
		}
		m.closeAgent()
		close(m.exited)
	}()
	if err := os.WriteFile(filepath.Join(spec.Dir, PIDFile), []byte(strconv.Itoa(m.PID)+"\n"), 0o600); err != nil {
		m.kill()
		return nil, err
	}
	if m.client, err = dialWhileAlive(ctx, sock, m.exited); err != nil {
		m.kill()
		return nil, fmt.Errorf("%s %s: %w: %s", qemu, strings.Join(args, " "), err, logTail(logPath, start))
	}
	return m, nil
}

// appendLog adds kilnd's own line to QEMU's log (how QEMU ended, which it cannot say).
func appendLog(path, line string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		f.WriteString(line)
		f.Close()
	}
}

// listen makes a socket at path (QMP's, the agent's) and returns its listening descriptor, for QEMU
// to accept on; the socket stays when kilnd closes its own copy.
func listen(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	return l.File()
}

// dialWhileAlive dials QMP until it answers, the process exits or ctx ends.
func dialWhileAlive(ctx context.Context, sock string, exited <-chan struct{}) (*qmp.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The socket is kilnd's and takes connections before QEMU answers: a QEMU that
	// exits must end the wait for its greeting too.
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		c, err := qmp.Dial(ctx, sock)
		if err == nil {
			return c, nil
		}
		select {
		case <-exited:
			return nil, errors.New("QEMU exited at start")
		case <-ctx.Done():
			if isClosed(exited) {
				return nil, errors.New("QEMU exited at start")
			}
			return nil, fmt.Errorf("QMP did not answer: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// logTail is what QEMU wrote to its log since offset, at most its last 1 KiB.
func logTail(path string, offset int64) string {
	b, _ := os.ReadFile(path)
	if int64(len(b)) > offset {
		b = b[offset:]
	}
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return string(bytes.TrimSpace(b))
}

// attachWait bounds how long Attach waits for a QEMU that is still starting (kilnd was
// killed just after it started one) to answer on QMP.
const attachWait = 10 * time.Second

// Attach reattaches to the QEMU of an instance directory, as a restarted kilnd does:
// a live QEMU process of the directory (pidOf) whose QMP socket answers, waiting up to
// attachWait while it is still starting. Otherwise it returns an error saying which.
func Attach(ctx context.Context, dir string) (*Machine, error) {
	pid, err := pidOf(dir)
	if err != nil {
		return nil, err
	}
	proc, _ := os.FindProcess(pid)
	m := newMachine(dir, pid, proc)
	ctx, cancel := context.WithTimeout(ctx, attachWait)
	defer cancel()
	for {
		c, err := qmp.Dial(ctx, filepath.Join(dir, QMPSocket))
		if err == nil {
			m.client = c
			break
		}
		if !isQEMU(pid) {
			return nil, fmt.Errorf("instance %s: QEMU %d exited before it answered on QMP: %w", dir, pid, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("instance %s: QEMU %d does not answer on QMP: %w", dir, pid, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	go m.watch()
	return m, nil
}

// pidOf finds the live QEMU of an instance directory: the process its pid file names or,
// when there is none yet or it names a process that is gone (kilnd writes the file just
// after QEMU starts, over the last run's), a QEMU whose -name is the directory's.
func pidOf(dir string) (int, error) {
	pidPath := filepath.Join(dir, PIDFile)
	if b, err := os.ReadFile(pidPath); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && isQEMU(pid) {
			return pid, nil
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	arg := []byte("\x00-name\x00guest=" + filepath.Base(dir) + ",")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 1 {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline"); err == nil && bytes.Contains(cmdline, arg) && isQEMU(pid) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("instance %s: no QEMU runs for it", dir)
}

// isQEMU reports whether pid is a live QEMU process (not a zombie, not a reused pid).
func isQEMU(pid int) bool { return isLive(pid, "qemu-system") }

// isLive reports whether pid is a live process (not a zombie) whose command line has
// name in it (not a reused pid).
func isLive(pid int, name string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte(name)) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if i := bytes.LastIndexByte(stat, ')'); err == nil && i > 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return false
}

// watch notices the exit of an attached QEMU, which is not kilnd's child: its QMP
// connection closes, then the process goes.
func (m *Machine) watch() {
	<-m.client.Done()
	for isQEMU(m.PID) {
		time.Sleep(50 * time.Millisecond)
	}
	m.closeAgent()
	close(m.exited)
}

// Exited is closed once the QEMU process is gone.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// Stop stops the machine: the ACPI power button and up to grace for the guest to power
// off (skipped when grace is 0), then QMP quit, then SIGTERM, then SIGKILL, each with a
// bounded wait. It is idempotent and returns once the process is gone. The commands are
// sent even when ctx has ended (each within the QMP client's own timeout): a stop is
// cleanup.
func (m *Machine) Stop(ctx context.Context, grace time.Duration) error {
	cmdCtx := context.WithoutCancel(ctx)
	if grace > 0 && m.Powerdown(cmdCtx) == nil && m.wait(ctx, grace) {
		return nil
	}
	if m.qmp(cmdCtx, "quit", nil) == nil && m.wait(ctx, 5*time.Second) {
		return nil
	}
	m.proc.Signal(syscall.SIGTERM)
	if m.wait(ctx, 5*time.Second) {
		return nil
	}
	m.kill()
	if !m.wait(context.WithoutCancel(ctx), 10*time.Second) {
		return fmt.Errorf("QEMU %d did not exit after SIGKILL", m.PID)
	}
	return nil
}

func (m *Machine) kill() {
	if m.proc != nil {
		m.proc.Kill()
	}
}

// wait waits up to d (and ctx) for the process to exit.
func (m *Machine) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}
