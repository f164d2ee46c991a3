package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Passed gathers the descriptors a QEMU process starts with: the i-th becomes its
// descriptor 3+i (exec.Cmd.ExtraFiles). It holds duplicates of its own, so the files
// given to it may be closed at once; Close closes them once QEMU has started.
type Passed struct {
	files []*os.File
	sets  int

	// the console file (append-only); the console's, QMP's and the agent's listeners
	console, consoleSock, qmp, agent *os.File
	// QEMU's end of the TPM's control socket (startTPM), when the machine has one
	tpm *os.File
}

// add passes a duplicate of f and returns the descriptor number QEMU will see.
func (p *Passed) add(f *os.File) (int, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("duplicate descriptor of %s: %w", f.Name(), err)
	}
	p.files = append(p.files, os.NewFile(uintptr(fd), f.Name()))
	return 2 + len(p.files), nil
}

// fdset passes f (and ro, a read-only descriptor of the same file, when not nil) as a
// new fd set and returns the -add-fd arguments and the name QEMU opens the set by.
func (p *Passed) fdset(f, ro *os.File, opaque string) ([]string, string, error) {
	p.sets++
	var args []string
	for _, file := range []*os.File{f, ro} {
		if file == nil {
			continue
		}
		fd, err := p.add(file)
		if err != nil {
			return nil, "", err
		}
		args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, p.sets, opaque))
	}
	return args, "/dev/fdset/" + strconv.Itoa(p.sets), nil
}

// byPath passes f for an option QEMU opens with plain open(2) or mmap rather than
// through an fd set (-kernel, -initrd), and returns the name QEMU opens it by. Reopening
// /proc/self/fd/N checks the file's own mode: QEMU's user must be let read it.
func (p *Passed) byPath(f *os.File) (string, error) {
	n, err := p.add(f)
	if err != nil {
		return "", err
	}
	return "/proc/self/fd/" + strconv.Itoa(n), nil
}

// SealedCopy makes a sealed in-memory copy (a memfd) of f, for a file QEMU must open by
// name (-kernel, -initrd): a store file cannot be reopened by QEMU's user through
// /proc/self/fd, a memfd can. The seals keep its content fixed, so one copy may serve
// every machine that boots the same file (QEMU maps the initrd, never writes it).
func SealedCopy(f *os.File, name string) (*os.File, error) {
	fd, err := unix.MemfdCreate("kiln-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("copy %s for QEMU: %w", name, err)
	}
	m := os.NewFile(uintptr(fd), "memfd:kiln-"+name)
	if _, err := io.Copy(m, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		m.Close()
		return nil, fmt.Errorf("copy %s for QEMU: %w", name, err)
	}
	if _, err := unix.FcntlInt(m.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		m.Close()
		return nil, fmt.Errorf("seal the copy of %s: %w", name, err)
	}
	return m, nil
}

// Close closes every descriptor Passed holds.
func (p *Passed) Close() {
	for _, f := range slices.Concat(p.files, []*os.File{p.console, p.consoleSock, p.qmp, p.agent, p.tpm}) {
		if f != nil {
			f.Close()
		}
	}
	*p = Passed{}
}

// reopenReadOnly opens the file behind f again, read-only, without its name.
func reopenReadOnly(f *os.File) (*os.File, error) {
	ro, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s read-only: %w", f.Name(), err)
	}
	return ro, nil
}

// addFile hands the running QEMU f (and ro, as for Passed.fdset) as a new fd set over
// QMP and returns the name QEMU opens it by. opaque tags the set, for dropFiles.
func (m *Machine) addFile(ctx context.Context, f, ro *os.File, opaque string) (string, error) {
	set := -1
	for _, file := range []*os.File{f, ro} {
		if file == nil {
			continue
		}
		args := map[string]any{"opaque": opaque}
		if set >= 0 {
			args["fdset-id"] = set
		}
		cmd, _ := json.Marshal(map[string]any{"execute": "add-fd", "arguments": args})
		out, err := m.client.RunWithFile(ctx, cmd, file)
		if err != nil {
			if set >= 0 {
				m.qmp(ctx, "remove-fd", map[string]any{"fdset-id": set})
			}
			return "", fmt.Errorf("pass %s to QEMU: %w", f.Name(), err)
		}
		var reply struct {
			Return struct {
				FDSet int `json:"fdset-id"`
			} `json:"return"`
		}
		if err := json.Unmarshal(out, &reply); err != nil {
			return "", fmt.Errorf("add-fd reply %.80q: %w", out, err)
		}
		set = reply.Return.FDSet
	}
	return "/dev/fdset/" + strconv.Itoa(set), nil
}

// dropFiles removes the fd sets tagged with any of the given names: QEMU closes their
// descriptors once no block node uses them.
func (m *Machine) dropFiles(ctx context.Context, opaques ...string) error {
	out, err := m.run(ctx, "query-fdsets", nil)
	if err != nil {
		return err
	}
	var reply struct {
		Return []struct {
			ID  int `json:"fdset-id"`
			FDs []struct {
				Opaque string `json:"opaque"`
			} `json:"fds"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return fmt.Errorf("query-fdsets reply %.80q: %w", out, err)
	}
	for _, set := range reply.Return {
		if len(set.FDs) > 0 && slices.Contains(opaques, set.FDs[0].Opaque) {
			if err := m.qmp(ctx, "remove-fd", map[string]any{"fdset-id": set.ID}); err != nil {
				return err
			}
		}
	}
	return nil
}
