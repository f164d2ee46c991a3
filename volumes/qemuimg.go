package volumes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Limits bound what one qemu-img run may use. A disk file is outside input: a crafted
// header can make qemu-img allocate a lot or spin, so inspection runs tightly bound
// (as OpenStack does for the same reason).
type Limits struct {
	AddressSpace int64         // bytes of virtual memory (RLIMIT_AS)
	CPU          time.Duration // CPU seconds (RLIMIT_CPU)
	Wall         time.Duration // wall-clock deadline
	// Stall, when set, bounds the time a conversion may go without progress: a disk
	// export that stops answering (its process stopped by the caller who owns it) fails
	// the conversion then, not at Wall.
	Stall time.Duration
}

// InspectLimits bound the metadata-only runs (info, check).
var InspectLimits = Limits{AddressSpace: 1 << 30, CPU: 30 * time.Second, Wall: time.Minute}

// ConvertLimits bound a conversion, which reads and writes the whole disk.
var ConvertLimits = Limits{AddressSpace: 2 << 30, CPU: time.Hour, Wall: 2 * time.Hour, Stall: 5 * time.Minute}

// Tool runs qemu-img (and qemu-nbd). The zero value runs "qemu-img" from PATH as
// kilnd's own user.
type Tool struct {
	// Path is the qemu-img binary; empty means "qemu-img".
	Path string
	// NBD is the qemu-nbd binary that exports a caller's disk to Convert; empty means
	// "qemu-nbd".
	NBD string
	// Cred, when set, is the user and groups the tools that read a caller's file run
	// as (see As).
	Cred *syscall.Credential
	// SocketDir is where Convert makes, for each conversion of a caller's disk, a
	// private directory (0700, kilnd's) holding the socket its export is served on; it
	// must be short enough for a socket path (under 100 bytes). Empty means the
	// system's temporary directory.
	SocketDir string
}

// As returns the tool reading a caller's files as the given user and groups: whatever a
// disk file's header names, the tool can then open only what that user may. kilnd reads
// a caller's files as the caller; it writes the store itself (Convert).
func (t Tool) As(uid, gid uint32, groups []uint32) Tool {
	t.Cred = &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}
	return t
}

// ToolError is a failed qemu-img run: its argv, exit status and trimmed stderr.
type ToolError struct {
	Argv   []string
	Err    error
	Stderr string
}

func (e *ToolError) Error() string {
	msg := strings.Join(e.Argv, " ") + ": " + e.Err.Error()
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *ToolError) Unwrap() error { return e.Err }

func (t Tool) path() string {
	if t.Path != "" {
		return t.Path
	}
	return "qemu-img"
}

// run runs qemu-img with args under limits and returns its stdout. files become its
// descriptors 3, 4, ... (/dev/fd/3, ...).
func (t Tool) run(ctx context.Context, lim Limits, files []*os.File, args ...string) ([]byte, error) {
	var stdout bytes.Buffer
	err := t.runTo(ctx, lim, files, &stdout, args...)
	return stdout.Bytes(), err
}

// runTo is run with qemu-img's stdout going to w.
func (t Tool) runTo(ctx context.Context, lim Limits, files []*os.File, w io.Writer, args ...string) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, lim.Wall)
	defer cancel()
	argv := append(limited(lim, t.path()), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.ExtraFiles = files
	// Its own process group, killed whole at the deadline; and Wait gives up on the
	// output a child left holding it (a caller may make her own qemu-img start one).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: t.Cred, Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stdout = w
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		switch {
		case parent.Err() != nil:
			err = fmt.Errorf("%w (%v)", parent.Err(), err)
		case ctx.Err() != nil:
			err = fmt.Errorf("%w after %s", ctx.Err(), lim.Wall)
		}
		return &ToolError{Argv: argv[4:], Err: err, Stderr: trim(stderr.String())}
	}
	return nil
}

// limited is the argv that runs prog under lim's memory and CPU limits (prlimit execs
// prog: same process).
func limited(lim Limits, prog string) []string {
	return []string{
		"prlimit",
		"--as=" + strconv.FormatInt(lim.AddressSpace, 10),
		"--cpu=" + strconv.FormatInt(int64(lim.CPU/time.Second), 10),
		"--", prog,
	}
}

// trim keeps the useful part of a tool's stderr: its last lines, at most 1 KiB.
func trim(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 1024 {
		s = "…" + s[len(s)-1024:]
	}
	return s
}

// invalid wraps a qemu-img refusal of outside input as InvalidArgument, keeping the
// tool's own words, which say what is wrong with the file.
func invalid(path string, err error) error {
	var te *ToolError
	if errors.As(err, &te) && te.Stderr != "" {
		return fmt.Errorf("disk %s: %s: %w", path, lastLine(te.Stderr), errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("disk %s: %w", path, err)
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimPrefix(s, "qemu-img: ")
}
