package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// exportDiskArg is how the caller's qemu-nbd is told to read the disk: its descriptor 4.
// Descriptor 3 is the listening socket: socket activation (LISTEN_FDS=1) hands qemu-nbd
// exactly one descriptor, always the first after stdio.
const exportDiskArg = "/dev/fd/4"

// Bounds on the export's process, whatever the caller does to it (the caller owns it:
// it may stop it, kill it or attach a debugger).
const (
	// exportReap bounds the wait for the killed export to be reaped.
	exportReap = 10 * time.Second
	// exportGrace is how long kilnd's qemu-img may run on once the export has exited:
	// its connection is closed then, so qemu-img fails at once; the grace only keeps
	// a wedged qemu-img from holding the conversion.
	exportGrace = 10 * time.Second
	// exportSettle is how long a failed conversion waits for the export to be reaped,
	// to tell whether the export failed first.
	exportSettle = time.Second
	// maxSocketPath is what fits in sockaddr_un's sun_path with its NUL.
	maxSocketPath = 107
)

// export is a caller's disk served read-only over NBD by qemu-nbd running as the caller,
// on a socket kilnd made in a directory only kilnd can reach.
type export struct {
	dir    string // the private directory holding socket
	socket string
	pid    int
	exited chan struct{} // closed once the process is reaped; err is set then
	err    error
	stderr *tailBuffer
}

// startExport starts the caller's qemu-nbd (as t.Cred, in its own process group, under
// ConvertLimits' memory and CPU limits) exporting src read-only in its own format. The
// process gets the caller's descriptor, the listening socket and stdio (/dev/null and a
// pipe), nothing else: never a path of the caller's, never a file of the store. kilnd
// listens before qemu-nbd starts, so a client may connect at once. Whoever starts an
// export calls its stop.
func (t Tool) startExport(src Info) (_ *export, err error) {
	nbd, err := exec.LookPath(t.nbdPath())
	if err != nil {
		return nil, err
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		return nil, err
	}
	if t.SocketDir != "" {
		if err := os.MkdirAll(t.SocketDir, 0o700); err != nil {
			return nil, fmt.Errorf("export of disk %s: %w", src.Name, err)
		}
	}
	dir, err := os.MkdirTemp(t.SocketDir, "nbd-") // 0700: the caller cannot reach the socket by path
	if err != nil {
		return nil, fmt.Errorf("export of disk %s: %w", src.Name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	e := &export{dir: dir, socket: filepath.Join(dir, "s"), exited: make(chan struct{}), stderr: &tailBuffer{}}
	ln, err := listenUnix(e.socket)
	if err != nil {
		return nil, fmt.Errorf("export of disk %s: %w", src.Name, err)
	}
	// sh only sets LISTEN_PID to its own pid and execs prlimit, which execs qemu-nbd: one
	// pid throughout, and qemu-nbd takes the socket only if LISTEN_PID is its getpid().
	lim := limited(ConvertLimits, nbd)
	lim[0] = prlimit
	argv := append(append([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh"}, lim...),
		"--read-only", "--shared=1", "--format="+src.Format, exportDiskArg)
	cmd := exec.Command(argv[0], argv[1:]...) // not CommandContext: stop kills the whole group
	cmd.ExtraFiles = []*os.File{ln, src.File}
	cmd.Env = []string{"LISTEN_FDS=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		// qemu-nbd allocates a buffer per request (2 MiB from qemu-img convert): above
		// glibc's default threshold each is a fresh mmap, page-faulted and unmapped
		// again, which doubled the export's CPU time; from the heap they are reused.
		"MALLOC_MMAP_THRESHOLD_=33554432", "MALLOC_TRIM_THRESHOLD_=268435456"}
	cmd.Dir = "/"
	cmd.Stderr = e.stderr
	cmd.WaitDelay = exportReap
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: t.Cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	ln.Close() // kilnd keeps no copy: when the export exits, a client gets an error, not a queue
	if err != nil {
		return nil, fmt.Errorf("export of disk %s: %w", src.Name, err)
	}
	e.pid = cmd.Process.Pid
	go func() { e.err = cmd.Wait(); close(e.exited) }() // the one reaper of this child
	return e, nil
}

// listenUnix makes a listening Unix socket at path, as a blocking descriptor that no
// goroutine of kilnd's polls.
func listenUnix(path string) (*os.File, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes: give a shorter socket directory", path, maxSocketPath)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// stop kills the export's process group unless it has exited, reaps it (bounded) and
// removes its directory. Idempotent.
func (e *export) stop() {
	select {
	case <-e.exited:
	default:
		// The group is the export's own (Setpgid) and cannot be reused while it lives;
		// the process itself too, in case the caller moved it out of the group (it is
		// hers: she may trace it). Its pid is not reused before it is reaped.
		syscall.Kill(-e.pid, syscall.SIGKILL)
		syscall.Kill(e.pid, syscall.SIGKILL)
		select {
		case <-e.exited:
		case <-time.After(exportReap):
		}
	}
	os.RemoveAll(e.dir)
}

// failure says why the export failed: its exit status and the end of its stderr.
func (e *export) failure() string {
	msg := "exited"
	if e.err != nil {
		msg = e.err.Error()
	}
	if s := trim(e.stderr.String()); s != "" {
		msg += ": " + lastLine(s)
	}
	return msg
}

// errStall and errExportExited are why a conversion of an export was cancelled.
var (
	errStall        = errors.New("no progress")
	errExportExited = errors.New("the export exited")
)

// convertExported is Convert of a caller's disk: the caller's qemu-nbd exports it, and
// kilnd's own qemu-img reads the export as raw bytes of the size Inspect found (the
// format was the caller's side's to read) and writes dst. qemu-img asks the export for
// block status, so holes stay holes and are never read.
func (t Tool) convertExported(ctx context.Context, src Info, dst string) error {
	e, err := t.startExport(src)
	if err != nil {
		return err
	}
	defer e.stop()
	spec, err := json.Marshal(map[string]any{
		"driver": "raw",
		"size":   src.VirtualSize, // the export must hold at least what Inspect saw; the layer holds exactly that
		"file": map[string]any{
			"driver": "nbd",
			"server": map[string]any{"type": "unix", "path": e.socket},
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	progress := make(chan struct{}, 1)
	watched := make(chan struct{})
	defer close(watched)
	go watch(e, progress, watched, ConvertLimits.Stall, cancel)
	writer := Tool{Path: t.Path} // kilnd's own: the store is written by kilnd only
	err = writer.runTo(ctx, ConvertLimits, nil, progressWriter(progress), "convert", "-p", "-O", "qcow2", "-o", layerOptions, "json:"+string(spec), dst)
	if err == nil {
		return nil
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errStall):
		return fmt.Errorf("disk %s: no progress for %s: its export (qemu-nbd running as the caller) stopped answering: %w",
			src.Name, ConvertLimits.Stall, context.DeadlineExceeded)
	case ctx.Err() != nil && !errors.Is(cause, errExportExited):
		return err // cancelled from above
	}
	// Whether the export failed first: qemu-img fails as soon as the export's socket
	// closes, perhaps before the export is reaped. An export that exits 0 only saw its
	// client go: qemu-img's error says why.
	select {
	case <-e.exited:
	case <-time.After(exportSettle):
	}
	select {
	case <-e.exited:
		if e.err != nil {
			return fmt.Errorf("disk %s: its export (qemu-nbd running as the caller) failed: %s (%v): %w",
				src.Name, e.failure(), err, errdefs.ErrInvalidArgument)
		}
	default:
	}
	return invalid(src.Name+" (read through its export)", err)
}

// watch cancels the conversion when it makes no progress for stall (0: never), and
// exportGrace after the export exits; it returns when done closes.
func watch(e *export, progress, done <-chan struct{}, stall time.Duration, cancel context.CancelCauseFunc) {
	var stallC <-chan time.Time
	var tm *time.Timer
	if stall > 0 {
		tm = time.NewTimer(stall)
		defer tm.Stop()
		stallC = tm.C
	}
	for {
		select {
		case <-done:
			return
		case <-progress:
			if tm != nil {
				tm.Reset(stall)
			}
		case <-stallC:
			cancel(errStall)
			return
		case <-e.exited:
			select {
			case <-done:
			case <-time.After(exportGrace):
				cancel(errExportExited)
			}
			return
		}
	}
}

// progressWriter takes `qemu-img convert -p` output: each write (a new percentage, at
// least every 1%) is progress.
type progressWriter chan<- struct{}

func (p progressWriter) Write(b []byte) (int, error) {
	select {
	case p <- struct{}{}:
	default:
	}
	return len(b), nil
}

// tailBuffer keeps the last 4 KiB written to it; safe for concurrent use.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append([]byte(nil), t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ToValidUTF8(string(t.b), "?")
}

func (t Tool) nbdPath() string {
	if t.NBD != "" {
		return t.NBD
	}
	return "qemu-nbd"
}
