package hypervisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TPMAvailable reports whether swtpm is installed (the swtpm package), and what is
// missing when not.
func TPMAvailable() error {
	if _, err := exec.LookPath("swtpm"); err != nil {
		return fmt.Errorf("the virtual TPM needs swtpm (install the swtpm package): %w", err)
	}
	return nil
}

// startTPM starts swtpm for a machine of dir, detached in its own session (as QEMU is:
// it outlives kilnd) as user, and returns QEMU's end of its control socket. swtpm is
// given its end of a socket pair as its one client and its state directory open, and
// ends when QEMU does (Start stops it when QEMU fails to start). Its stdout and stderr
// go to TPMLog and its pid to TPMPID in dir.
func startTPM(dir string, t *TPM, user User) (*os.File, error) {
	if t.State == nil {
		return nil, fmt.Errorf("TPM: its state directory is not open")
	}
	binary := t.Binary
	if binary == "" {
		binary = "swtpm"
	}
	StopTPM(dir) // a swtpm of an earlier run would hold the state's lock
	if os.Geteuid() == 0 {
		if err := chownTree(t.State, int(user.UID), int(user.GID)); err != nil {
			return nil, fmt.Errorf("TPM state: %w", err)
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("TPM socket pair: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[0]), "swtpm-ctrl")
	ours := os.NewFile(uintptr(fds[1]), "tpm-ctrl")
	defer theirs.Close()
	logPath := filepath.Join(dir, TPMLog)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		ours.Close()
		return nil, err
	}
	defer logf.Close()
	// Descriptors 3 (the control socket) and 4 (the state directory, reached through
	// /proc/self/fd: the instance directory is not swtpm's user's to walk).
	// --terminate: swtpm ends when its data channel (which QEMU hands it over the
	// control socket) closes, also when QEMU is killed.
	cmd := exec.Command(binary, "socket", "--tpm2", "--terminate",
		"--ctrl", "type=unixio,clientfd=3",
		"--tpmstate", "dir=/proc/self/fd/4")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{theirs, t.State}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{
		Uid: user.UID, Gid: user.GID, Groups: append([]uint32{}, user.Groups...)}}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("%s: %w", binary, err)
	}
	go cmd.Wait() // the reaper of this child; it ends with QEMU
	if err := os.WriteFile(filepath.Join(dir, TPMPID), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		cmd.Process.Kill()
		ours.Close()
		return nil, err
	}
	return ours, nil
}

// chownTree gives uid the directory dir and what is in it (swtpm's files, made by the
// user of an earlier run).
func chownTree(dir *os.File, uid, gid int) error {
	if err := dir.Chown(uid, gid); err != nil {
		return err
	}
	names, err := dir.Readdirnames(-1)
	if _, serr := dir.Seek(0, 0); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Fchownat(int(dir.Fd()), n, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

// StopTPM ends the swtpm of the machine of dir, if one still runs (it ends by itself
// once its QEMU is gone; this is for one that did not), waiting up to a few seconds.
// It is idempotent.
func StopTPM(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, TPMPID))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	for i := 0; i < 100 && isLive(pid, "swtpm"); i++ {
		if i == 20 {
			syscall.Kill(pid, syscall.SIGKILL)
		} else if i == 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
		time.Sleep(25 * time.Millisecond)
	}
	os.Remove(filepath.Join(dir, TPMPID))
}
