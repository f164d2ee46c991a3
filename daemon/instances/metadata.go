package instances

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/log"

	"kiln/daemon/record"
)

// launchFile, in the instance's directory, keeps what the metadata service gives the
// guest beyond its record: the user data and the public key it was launched with (the
// key pair may be gone since; EC2 answers with the key of the launch too).
const launchFile = "launch.json"

// Launch is what an instance was launched with, for its metadata service.
type Launch struct {
	UserData  []byte `json:"userData,omitempty"`
	PublicKey string `json:"publicKey,omitempty"`
}

// writeLaunch keeps the launch's data in the instance's directory (dir, made).
func writeLaunch(dir string, l Launch) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, launchFile), b, 0o600)
}

// Firewall lets the QEMU users of this kilnd's instances reach its metadata service
// (machines.Firewall).
type Firewall interface {
	Sync(ctx context.Context, uids func() []uint32) error
}

// ClaimUsers claims, host-wide, the QEMU users of the instances in use (machines.Users
// Claim), at start: claims are lost with /run, and a kilnd of an earlier version made
// none. One another kilnd claims is logged; the instance gets another at its next start.
func (m *Manager) ClaimUsers(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, inst := range m.all {
		if inst.rec.State != record.StateTerminated && inst.rec.QEMUSlot != 0 && !m.specs.Users.Claim(inst.rec.QEMUSlot, m.Root) {
			log.G(ctx).WithField("instance", inst.rec.ID).WithField("uid", m.specs.Users.User(inst.rec.QEMUSlot).UID).
				Warn("another kilnd of this host claims the QEMU user of this instance; it gets another at its next start")
		}
	}
}

// SyncFirewall gives the firewall the QEMU users of the instances in use (not
// terminated), when there is a firewall. A failure is logged: those instances' guests
// then find no metadata service.
func (m *Manager) SyncFirewall(ctx context.Context) {
	if m.Firewall == nil {
		return
	}
	err := m.Firewall.Sync(ctx, func() []uint32 {
		m.mu.Lock()
		defer m.mu.Unlock()
		var uids []uint32
		for slot := range m.slotsLocked() {
			if slot != 0 {
				uids = append(uids, m.specs.Users.User(slot).UID)
			}
		}
		slices.Sort(uids)
		return uids
	})
	if err != nil {
		log.G(ctx).WithError(err).Warn("let instances reach the metadata service")
	}
}

// Metadata is the running instance whose QEMU runs as uid, with what it was launched
// with: what the metadata service answers that QEMU's guest. ok is false when no
// running instance's QEMU has that uid (a host process, a QEMU kilnd no longer runs).
func (m *Manager) Metadata(uid uint32) (rec record.Instance, l Launch, ok bool) {
	m.mu.Lock()
	for _, inst := range m.all {
		if inst.rec.State == record.StateRunning && inst.rec.QEMUSlot != 0 && m.specs.Users.User(inst.rec.QEMUSlot).UID == uid {
			rec, ok = inst.rec, true
			rec.Mappings = slices.Clone(inst.rec.Mappings)
			break
		}
	}
	m.mu.Unlock()
	if !ok {
		return rec, l, false
	}
	if b, err := os.ReadFile(filepath.Join(m.layout.Dir(rec.ID), launchFile)); err == nil {
		json.Unmarshal(b, &l)
	}
	return rec, l, true
}
