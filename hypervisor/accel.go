package hypervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Accelerators QEMU can run guests with.
const (
	AccelKVM = "kvm" // hardware virtualization through /dev/kvm
	AccelTCG = "tcg" // QEMU's software emulation: slower, works everywhere
)

// Accelerator choices an operator can make (kilnd --accel).
const (
	AccelAuto = "auto" // probe KVM with a guest that must run; TCG when it does not
)

// ProbeDeadline is how long the probe guest has to prove it ran.
const ProbeDeadline = 2 * time.Second

// Prober runs the probe guest. The zero value is not usable: Qemu names the
// qemu-system-x86_64 binary and KVMDevice /dev/kvm (each replaceable in tests).
type Prober struct {
	Qemu      string
	KVMDevice string
	Deadline  time.Duration // default ProbeDeadline
	// User, when set, is who the probe's QEMU runs as: the probe must run as machines
	// do, so that KVM is chosen only when their QEMU can open it.
	User *User
}

// Choose returns the accelerator to run guests with, and why. choice is AccelAuto,
// AccelKVM or AccelTCG. AccelTCG and AccelKVM are obeyed as given (KVM only when its
// device opens: an error otherwise, as for an unknown choice). AccelAuto uses KVM only when a guest
// proved under it that it runs code (Probe), and TCG otherwise; then the same guest runs
// under TCG too, so that a payload which cannot run anywhere is told apart from KVM
// that runs nothing. The probe takes at most the deadline; both run at once.
func (p Prober) Choose(ctx context.Context, choice string) (accel, reason string, err error) {
	switch choice {
	case AccelTCG:
		return AccelTCG, "chosen by the operator (accelerator tcg)", nil
	case AccelKVM:
		if err := p.openKVM(); err != nil {
			return "", "", fmt.Errorf("accelerator kvm, but %w; choose auto or tcg on this host", err)
		}
		return AccelKVM, "chosen by the operator (accelerator kvm), not probed", nil
	case AccelAuto, "":
	default:
		return "", "", fmt.Errorf("accelerator %q: want auto, kvm or tcg", choice)
	}
	if err := p.openKVM(); err != nil {
		return AccelTCG, fmt.Sprintf("KVM: %v; using TCG", err), nil
	}
	tcgCtx, stopTCG := context.WithCancel(ctx)
	defer stopTCG()
	tcg := make(chan error, 1)
	go func() { _, err := p.Probe(tcgCtx, AccelTCG); tcg <- err }()
	took, kvmErr := p.Probe(ctx, AccelKVM)
	if kvmErr == nil {
		stopTCG() // KVM proved itself: the TCG run has nothing to add
	}
	tcgErr := <-tcg
	switch {
	case kvmErr == nil:
		return AccelKVM, fmt.Sprintf("KVM: the probe guest ran to its end in %s", took.Round(time.Millisecond)), nil
	case tcgErr != nil:
		return AccelTCG, fmt.Sprintf("KVM: %v; using TCG (the probe guest failed under TCG too: %v)", kvmErr, tcgErr), nil
	}
	return AccelTCG, fmt.Sprintf("KVM: %v; using TCG", kvmErr), nil
}

func (p Prober) openKVM() error {
	f, err := os.OpenFile(p.KVMDevice, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if p.User != nil && !p.User.mayReadWrite(st) {
		sys, _ := st.Sys().(*syscall.Stat_t)
		return fmt.Errorf("%s (mode %#o, owner %d:%d) does not let QEMU's user (uid %d) open it; give it group kvm and mode 0660, as Debian's udev rules do",
			p.KVMDevice, st.Mode().Perm(), sys.Uid, sys.Gid, p.User.UID)
	}
	return nil
}

// mayReadWrite reports whether the user may open a file of that mode and owner for
// reading and writing.
func (u User) mayReadWrite(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	mode := st.Mode().Perm()
	switch {
	case sys.Uid == u.UID:
		return mode&0o600 == 0o600
	case sys.Gid == u.GID || slices.Contains(u.Groups, sys.Gid):
		return mode&0o060 == 0o060
	}
	return mode&0o006 == 0o006
}

// Probe boots the probe payload (probePayload) under accel and returns how long it took
// to print its token, or an error saying what the guest did instead: printed nothing within
// the deadline, printed something else, or QEMU exited.
func (p Prober) Probe(ctx context.Context, accel string) (time.Duration, error) {
	deadline := p.Deadline
	if deadline == 0 {
		deadline = ProbeDeadline
	}
	var nonce [8]byte
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	rand.Read(nonce[:])
	for i, b := range nonce {
		nonce[i] = digits[int(b)%len(digits)]
	}
	token := probeToken(nonce)

	// The firmware goes to QEMU as a memory file: nothing to clean up on disk.
	fd, err := unix.MemfdCreate("kiln-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("probe: memfd: %w", err)
	}
	fw := os.NewFile(uintptr(fd), "kiln-probe")
	defer fw.Close()
	if _, err := fw.Write(probePayload(nonce)); err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}

	cpu := "max"
	if accel == AccelKVM {
		cpu = "host"
	}
	// Output: the console through a pipe read here, QEMU's messages into a memory file.
	// Both are files (no copying goroutines), so nothing waits on a child that QEMU
	// left holding them; QEMU and anything it started share a process group, killed
	// whole at the end.
	errFD, err := unix.MemfdCreate("kiln-probe-stderr", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("probe: memfd: %w", err)
	}
	stderr := os.NewFile(uintptr(errFD), "kiln-probe-stderr")
	defer stderr.Close()
	console, consoleW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}
	defer console.Close()
	cmd := exec.Command(p.Qemu, "-machine", "q35,accel="+accel, "-cpu", cpu, "-m", "16",
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-sandbox", Sandbox,
		"-bios", "/dev/fd/3", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	cmd.ExtraFiles = []*os.File{fw}
	cmd.Stdout, cmd.Stderr = consoleW, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.User != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: p.User.UID, Gid: p.User.GID, Groups: append([]uint32{}, p.User.Groups...)}
	}
	start := time.Now()
	err = cmd.Start()
	consoleW.Close() // QEMU has its own copy
	if err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	type result struct {
		console []byte
		found   bool
	}
	read := make(chan result, 1)
	go func() { c, f := readUntil(console, token, 4096); read <- result{c, f} }()

	// The token, the end of the output, QEMU's exit, or the deadline, whichever first.
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	var res result
	var werr error
	gotRes, gotExit, timedOut := false, false, false
	select {
	case res = <-read:
		gotRes = true
	case werr = <-exited:
		gotExit = true
		// What QEMU printed just before it left may still be in the pipe.
		select {
		case res = <-read:
			gotRes = true
		case <-time.After(200 * time.Millisecond):
		}
	case <-timer.C:
		timedOut = true
	case <-ctx.Done():
		timedOut = true
	}
	took := time.Since(start)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	console.Close() // ends the reader, whoever still holds the pipe's other end
	if !gotRes {
		res = <-read
	}
	if !gotExit {
		werr = <-exited
	}
	switch {
	case res.found:
		return took, nil
	case len(res.console) > 0:
		return 0, fmt.Errorf("the probe guest printed %q, not its token", trim(res.console, 80))
	case timedOut:
		return 0, fmt.Errorf("the probe guest printed nothing within %s (a kernel would not boot)", deadline)
	}
	msg, _ := io.ReadAll(io.NewSectionReader(stderr, 0, 64<<10))
	line := firstLine(string(msg))
	if line == "" {
		line = "no message"
	}
	return 0, fmt.Errorf("QEMU exited before the probe guest ran (%v): %s", werr, line)
}

// readUntil reads r until token appears, r ends, or max bytes came.
func readUntil(r io.Reader, token string, max int) ([]byte, bool) {
	var got []byte
	buf := make([]byte, 512)
	for len(got) < max {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if bytes.Contains(got, []byte(token)) {
			return got, true
		}
		if err != nil {
			break
		}
	}
	return got, false
}

func trim(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
