package volumes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
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
}

// InspectLimits bound the metadata-only runs (info, check).
var InspectLimits = Limits{AddressSpace: 1 << 30, CPU: 30 * time.Second, Wall: time.Minute}

// ConvertLimits bound a conversion, which reads and writes the whole disk.
var ConvertLimits = Limits{AddressSpace: 2 << 30, CPU: time.Hour, Wall: 2 * time.Hour}

// Tool runs qemu-img. The zero value runs "qemu-img" from PATH.
type Tool struct {
	// Path is the qemu-img binary; empty means "qemu-img".
	Path string
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

// run runs qemu-img with args under limits and returns its stdout.
func (t Tool) run(ctx context.Context, lim Limits, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, lim.Wall)
	defer cancel()
	argv := append([]string{
		"prlimit",
		"--as=" + strconv.FormatInt(lim.AddressSpace, 10),
		"--cpu=" + strconv.FormatInt(int64(lim.CPU/time.Second), 10),
		"--", t.path(),
	}, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
			err = fmt.Errorf("%w after %s", ctx.Err(), lim.Wall)
		}
		return nil, &ToolError{Argv: argv[4:], Err: err, Stderr: trim(stderr.String())}
	}
	return stdout.Bytes(), nil
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
