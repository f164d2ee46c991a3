package machines

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"kiln/daemon/record"
	"kiln/hypervisor"
	"kiln/images"
	"kiln/volumes"
)

// Each instance's QEMU runs as a user of its own, a uid from qemuUIDBase on that no
// account of the host has (as systemd's dynamic users): it can open no file of the
// store or of another instance, and no other QEMU is its to signal or trace. Slot 0 is
// the accelerator probe's.
const (
	qemuUIDBase  = 2_000_000_000
	qemuUIDCount = 65_536
)

// Users are who QEMU runs as when kilnd is root; a kilnd that is not root can only
// run QEMU as itself, which it says once.
type Users struct {
	root     bool
	groups   []uint32 // supplementary groups: that of /dev/kvm when guests use KVM
	claimDir string   // ClaimDir
}

// NewUsers are the QEMU users of guests run with accel.
func NewUsers(accel, kvmDevice string) Users {
	u := Users{root: os.Geteuid() == 0, claimDir: ClaimDir}
	if st, err := os.Stat(kvmDevice); err == nil && accel == hypervisor.AccelKVM {
		if gid := st.Sys().(*syscall.Stat_t).Gid; gid != 0 {
			u.groups = []uint32{gid}
		}
	}
	return u
}

// User is the QEMU user of a slot (a uid offset).
func (u Users) User(slot uint32) hypervisor.User {
	if !u.root {
		return hypervisor.User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	}
	uid := qemuUIDBase + slot
	return hypervisor.User{UID: uid, GID: uid, Groups: u.groups}
}

// FreeSlot is a slot above 0, picked at random, that is not used, that no account of
// the host has and that claim gives this kilnd (Users.Claim): at random, so that a slot
// (and whatever a QEMU taken over by its guest left under its uid) rarely passes from
// one instance to the next.
func FreeSlot(used map[uint32]bool, claim func(slot uint32) bool) (uint32, error) {
	start := rand.Uint32N(qemuUIDCount - 1)
	for i := uint32(0); i < qemuUIDCount-1; i++ {
		slot := 1 + (start+i)%(qemuUIDCount-1)
		if used[slot] {
			continue
		}
		if _, err := user.LookupId(strconv.Itoa(int(qemuUIDBase + slot))); err == nil {
			continue // an account has it: not ours to give
		}
		if claim(slot) {
			return slot, nil
		}
	}
	return 0, fmt.Errorf("all %d QEMU users are taken", qemuUIDCount-1)
}

// ClaimDir holds the host's claims on QEMU users: a file per uid naming the root of the
// kilnd whose instance has it, so that two kilnds of one host never give one uid to two
// QEMUs (each would reach the other's, and the firewall could not tell their guests
// apart).
const ClaimDir = "/run/kiln/qemu-users"

// Claim makes the slot's user the kilnd of root's, and reports whether it is: claimed
// now, or already its. A claim is taken over only when its kilnd's root is gone (as this
// kilnd sees the filesystem) and no process runs as that user, or when it is empty (a
// kilnd died making it). Claims are made under a lock on the directory, so two kilnds
// never both take one. A kilnd that is not root runs QEMU as itself and claims nothing.
func (u Users) Claim(slot uint32, root string) bool {
	if !u.root || u.claimDir == "" {
		return true
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	// The parent is left as others make it (0755: /run/kiln holds the API socket).
	if err := os.MkdirAll(filepath.Dir(u.claimDir), 0o755); err != nil {
		return true // no claims on this host: as before them
	}
	if err := os.Mkdir(u.claimDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return true
	}
	unlock, err := lockDir(u.claimDir)
	if err != nil {
		return true
	}
	defer unlock()
	uid := qemuUIDBase + slot
	path := filepath.Join(u.claimDir, strconv.Itoa(int(uid)))
	owner, err := os.ReadFile(path)
	switch {
	case err == nil && string(owner) == root:
		return true
	case err == nil && len(owner) > 0:
		if _, err := os.Stat(string(owner)); err == nil || processOf(uid) {
			return false // another kilnd's
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false
	}
	return os.WriteFile(path, []byte(root), 0o600) == nil
}

// lockDir takes an exclusive lock on the directory dir, waiting for it.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// processOf reports whether a process runs as uid (the owner of its /proc directory).
func processOf(uid uint32) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if info, err := e.Info(); err == nil && info.Sys().(*syscall.Stat_t).Uid == uid {
			return true
		}
	}
	return false
}

// Release gives the slot's user up, if the kilnd of root has it.
func (u Users) Release(slot uint32, root string) {
	if u.claimDir == "" {
		return
	}
	if abs, err := filepath.Abs(root); err == nil {
		root = abs
	}
	unlock, err := lockDir(u.claimDir)
	if err != nil {
		return
	}
	defer unlock()
	path := filepath.Join(u.claimDir, strconv.Itoa(int(qemuUIDBase+slot)))
	if owner, err := os.ReadFile(path); err == nil && string(owner) == root {
		os.Remove(path)
	}
}

// Specs makes the machines instances' records describe.
type Specs struct {
	Layout record.Layout
	Store  *images.Store
	Accel  string
	Users  Users
	// Outbound: guests' networks reach beyond the host (Network.Outbound).
	Outbound bool
	boot     bootCopies
}

// Spec is the machine an instance record describes, its volumes those of its mappings
// in their order, with every file it needs opened here: QEMU gets descriptors, never
// names. Each disk's chain is checked as it is opened (volumes.OpenChain): a layer
// changed on disk stops the start. The caller calls close once the machine has started
// (or failed to).
func (m *Specs) Spec(rec record.Instance, vols []*record.Volume) (spec hypervisor.Spec, close func(), err error) {
	var files []*os.File
	close = func() { closeAll(files) }
	defer func() {
		if err != nil {
			close()
		}
	}()
	spec = hypervisor.Spec{Dir: m.Layout.Dir(rec.ID), Accel: m.Accel, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB,
		Cmdline: rec.Cmdline, User: m.Users.User(rec.QEMUSlot), Net: netOf(rec, m.Outbound)}
	if rec.Kernel != "" {
		for _, b := range []struct {
			layer digest.Digest
			f     **os.File
		}{{rec.Kernel, &spec.Kernel}, {rec.Initrd, &spec.Initrd}} {
			f, err := m.boot.get(m.Store.BlobPath(b.layer))
			if err != nil {
				return spec, close, err
			}
			files = append(files, f)
			*b.f = f
		}
	}
	for _, v := range vols {
		disk, err := OpenDisk(filepath.Base(v.DeviceName), m.ChainFiles(v))
		if err != nil {
			return spec, close, err
		}
		files = append(files, disk.Files...)
		spec.Disks = append(spec.Disks, disk)
	}
	if rec.BootMode == "uefi" {
		fw, err := openFirmware(m.Layout.Dir(rec.ID), rec.SecureBoot)
		if err != nil {
			return spec, close, err
		}
		files = append(files, fw.Code, fw.Vars)
		spec.Firmware = fw
		if rec.TPM {
			state, err := os.Open(filepath.Join(m.Layout.Dir(rec.ID), hypervisor.TPMDir))
			if err != nil {
				return spec, close, fmt.Errorf("TPM state: %w", err)
			}
			files = append(files, state)
			spec.TPM = &hypervisor.TPM{State: state}
		}
	}
	if rec.Seed {
		seed, err := os.Open(filepath.Join(m.Layout.Dir(rec.ID), "seed.iso"))
		if err != nil {
			return spec, close, err
		}
		files = append(files, seed)
		spec.Disks = append(spec.Disks, hypervisor.Disk{ID: "seed", Files: []*os.File{seed}, Format: "raw", ReadOnly: true})
	}
	return spec, close, nil
}

// openFirmware opens a UEFI machine's flash: OVMF's code and the instance's variable
// store in dir. On an error it leaves nothing open.
func openFirmware(dir string, secureBoot bool) (*hypervisor.Firmware, error) {
	code, err := hypervisor.OpenCode(secureBoot)
	if err != nil {
		return nil, err
	}
	vars, err := os.OpenFile(filepath.Join(dir, hypervisor.VarsFile), os.O_RDWR, 0)
	if err != nil {
		code.Close()
		return nil, fmt.Errorf("UEFI variable store: %w", err)
	}
	return &hypervisor.Firmware{Code: code, Vars: vars, SecureBoot: secureBoot}, nil
}

// ChainFiles are a volume's files bottom to top: its layers in the store (each also
// known by the name of the frozen file it was captured from, which the file above it
// may name), then its files not in the store yet.
func (m *Specs) ChainFiles(v *record.Volume) []volumes.ChainFile {
	var chain []volumes.ChainFile
	for _, d := range v.Chain {
		c := volumes.ChainFile{Path: m.Store.BlobPath(d)}
		for _, f := range v.Frozen {
			if f.Layer == d {
				c.Aliases = append(c.Aliases, filepath.Join(m.Layout.VolumeDir(v), f.Name))
			}
		}
		chain = append(chain, c)
	}
	for _, p := range m.Layout.Pending(v) {
		chain = append(chain, volumes.ChainFile{Path: p})
	}
	return chain
}

// OpenDisk opens and checks the chain of a disk with that id.
func OpenDisk(id string, chain []volumes.ChainFile) (hypervisor.Disk, error) {
	files, err := volumes.OpenChain(chain, false)
	if err != nil {
		return hypervisor.Disk{}, fmt.Errorf("disk %s: %w", id, err)
	}
	return hypervisor.Disk{ID: id, Files: files}, nil
}

// bootCopies keeps the sealed in-memory copies of the kernels and initrds machines
// boot (hypervisor.SealedCopy), one per blob, so that instances of one image share
// one: the most recently used few are kept, and a running QEMU keeps its own.
type bootCopies struct {
	mu     sync.Mutex
	copies map[string]*os.File // blob path → copy
	order  []string            // least recently used first
}

const bootCopiesKept = 8

// get returns a new descriptor of the copy of the blob at path, which the caller closes.
func (b *bootCopies) get(path string) (*os.File, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.copies[path]
	if c == nil {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		c, err = hypervisor.SealedCopy(f, filepath.Base(path))
		f.Close()
		if err != nil {
			return nil, err
		}
		if b.copies == nil {
			b.copies = map[string]*os.File{}
		}
		b.copies[path] = c
		if len(b.order) == bootCopiesKept {
			b.copies[b.order[0]].Close()
			delete(b.copies, b.order[0])
			b.order = b.order[1:]
		}
	}
	b.order = append(slices.DeleteFunc(b.order, func(p string) bool { return p == path }), path)
	fd, err := unix.FcntlInt(c.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), c.Name()), nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
