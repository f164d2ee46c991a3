package instances

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/console"
	"kiln/daemon/machines"
	"kiln/daemon/quota"
	"kiln/daemon/record"
	"kiln/daemon/vols"
	"kiln/hypervisor"
	"kiln/images"
	"kiln/internal/ids"
	"kiln/volumes"
)

const (
	// terminatedKept is how long a terminated instance stays visible.
	terminatedKept = time.Hour
	// stopGrace is how long a guest gets to power off on the ACPI button.
	stopGrace = api.StopGrace
	maxCount  = 16
)

// Instance is a live instance: its record and, while QEMU runs, its machine.
type Instance struct {
	op       sync.Mutex // one lifecycle operation at a time
	rec      record.Instance
	machine  *hypervisor.Machine
	guestOff bool // QEMU said the guest shut itself down
	// hurried is set by a forced stop or terminate that finds the instance already
	// stopping or shutting down: the grace its guest has is cut short.
	hurried atomic.Bool
	// tags are the instance's tags, guarded by Manager.mu: a tag change does not wait for
	// inst.op (a stop holds it for its grace), so they are kept beside rec, whose copy
	// of them set writes. Maps are replaced, never changed.
	tags map[string]string
}

// Placer puts an instance's QEMU where the host keeps its processes: a systemd scope,
// or nowhere special (detached in its own session).
type Placer interface {
	Place(ctx context.Context, id string, pid, cpus, memoryMiB int) error
	Kind() string
}

// Imaging is what the instance domain needs of the image side when it makes an image of
// an instance: the stored-bytes quota, and the tracking of an image being made.
type Imaging interface {
	// AdmitStored reserves bytes of new layers for user, or refuses them past the quota.
	AdmitStored(user string, bytes int64) (release func(), err error)
	// Track registers an image being made of an instance; end ends it.
	Track(id, instance string, progress func() (done, total int64)) (end func())
}

// Config is what the instance domain is made of.
type Config struct {
	DB      *record.DB
	Store   *images.Store
	Builder *builder.Builder
	Qemu    string // the qemu-system-x86_64 binary
	Accel   string // the accelerator guests run with
	// KVMDevice is /dev/kvm, whose group QEMU's users get under KVM.
	KVMDevice string
	// Outbound: guests' networks reach beyond the host (machines.Network).
	Outbound bool
	// Firewall, when set, lets instances' QEMU users reach the metadata service.
	Firewall Firewall
	Root     string
	// Ops runs long operations; they stop when OpsCtx is cancelled.
	Ops    *sync.WaitGroup
	OpsCtx context.Context
	Placer Placer
	// Quota gives a user's limits, as the settings say now.
	Quota   func(user string) quota.Quota
	Imaging Imaging
	Vols    *vols.Set
	// Loaded are the instances' records as the DB holds them.
	Loaded []record.Instance
}

// Manager keeps every instance's record and machine (volumes are vols.Set's).
// Records change only through set, which writes the DB (with an event) before the cache.
type Manager struct {
	Config
	tool   volumes.Tool
	specs  *machines.Specs
	layout record.Layout

	mu  sync.Mutex
	all map[string]*Instance
}

// New makes the instance domain, with the instances loaded from the DB.
func New(cfg Config) *Manager {
	layout := record.Layout{Root: cfg.Root}
	m := &Manager{Config: cfg, tool: cfg.Builder.Tool, layout: layout, all: map[string]*Instance{},
		specs: &machines.Specs{Layout: layout, Store: cfg.Store, Accel: cfg.Accel, Users: machines.NewUsers(cfg.Accel, cfg.KVMDevice), Outbound: cfg.Outbound}}
	for _, rec := range cfg.Loaded {
		m.all[rec.ID] = &Instance{rec: rec, tags: rec.Tags}
	}
	return m
}

// Units says where instances' QEMUs run: systemd scopes or detached.
func (m *Manager) Units() string { return m.Placer.Kind() }

// Dir is an instance's directory.
func (m *Manager) Dir(id string) string { return m.layout.Dir(id) }

// update is set where no caller can be handed the error (a background operation, a
// cleanup after a failure): a record that could not be written is logged, with what it
// was to record.
func (m *Manager) update(inst *Instance, what string, change func(r *record.Instance)) {
	if err := m.set(inst, change); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Errorf("record the instance %s", what)
	}
}

// set applies change to the instance's record, writes it with an event for a state
// change, then keeps it. The caller holds inst.op (or is creating the instance).
func (m *Manager) set(inst *Instance, change func(r *record.Instance)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := inst.rec
	rec.Mappings = slices.Clone(inst.rec.Mappings)
	change(&rec)
	rec.Tags = inst.tags
	if err := m.DB.PutInstance(rec, inst.rec.State); err != nil {
		return err
	}
	if rec.State != inst.rec.State {
		logTransition(log.L, rec.ID, inst.rec.State, rec.State, rec.StateReason)
	}
	inst.rec = rec
	m.all[rec.ID] = inst
	return nil
}

// logTransition logs an instance's change of state as "instance STATE", with the
// state it left (from) and the reason when there are: an instance's first state has
// none before it, and most changes have no reason.
func logTransition(l *log.Entry, id, from, to, reason string) {
	l = l.WithField("instance", id)
	if from != "" {
		l = l.WithField("from", from)
	}
	if reason != "" {
		l = l.WithField("reason", reason)
	}
	l.Info("instance " + to)
}

// Roots lists every blob instances need, for GC: the layers under each volume, and the
// kernel and initrd of each instance that is not terminated.
func (m *Manager) Roots() []digest.Digest {
	out := m.Vols.Layers()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, inst := range m.all {
		if inst.rec.State != record.StateTerminated && inst.rec.Kernel != "" {
			out = append(out, inst.rec.Kernel, inst.rec.Initrd)
		}
	}
	return out
}

// Record returns a copy of the instance's record, for readers that do not hold
// inst.op (writers hold it and m.mu).
func (m *Manager) Record(inst *Instance) record.Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return inst.record()
}

// record is a copy of the instance's record with its tags. The caller holds m.mu.
func (inst *Instance) record() record.Instance {
	r := inst.rec
	r.Tags = inst.tags
	return r
}

// Tag changes the instance's tags: change gets them and returns the new ones (it must
// not change the map it gets). It does not wait for an operation on the instance.
func (m *Manager) Tag(inst *Instance, change func(map[string]string) (map[string]string, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	tags, err := change(inst.tags)
	if err != nil {
		return err
	}
	rec := inst.rec
	rec.Tags = tags
	if err := m.DB.PutInstance(rec, rec.State); err != nil {
		return err
	}
	inst.tags = tags
	return nil
}

// Get finds the instance ref names among those the caller me may see: an i- id, a name
// (the caller's own instance of that name first), or the start of one id (i-0d2b). A
// terminated instance is found for as long as List shows it; a name goes to the live
// instance that has it, else to the one last terminated.
func (m *Manager) Get(ref, me string, visible func(owner string) bool) (*Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst, ok := m.all[ref]; ok && visible(inst.rec.OwnerID) && !forgotten(inst.rec) {
		return inst, nil
	}
	var found []*Instance
	for _, inst := range m.all {
		if visible(inst.rec.OwnerID) && !forgotten(inst.rec) {
			found = append(found, inst)
		}
	}
	slices.SortFunc(found, func(a, b *Instance) int { // live first, then the last terminated
		return cmp.Or(cmp.Compare(liveFirst(a.rec), liveFirst(b.rec)), b.rec.TerminatedAt.Compare(a.rec.TerminatedAt), strings.Compare(a.rec.ID, b.rec.ID))
	})
	return ids.Pick("instance", record.InstancePrefix, ref, me, found, func(inst *Instance) ids.Ref {
		return ids.Ref{ID: inst.rec.ID, Name: inst.rec.Name, Owner: inst.rec.OwnerID}
	})
}

func liveFirst(r record.Instance) int {
	if r.State == record.StateTerminated {
		return 1
	}
	return 0
}

// forgotten reports an instance terminated long enough ago that List no longer shows it.
func forgotten(r record.Instance) bool {
	return r.State == record.StateTerminated && time.Since(r.TerminatedAt) > terminatedKept
}

// List returns copies of the records the caller may see, oldest first; terminated ones
// only with all. Instances terminated over an hour ago are forgotten here.
func (m *Manager) List(all bool, visible func(owner string) bool) []record.Instance {
	m.forget()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []record.Instance
	for _, inst := range m.all {
		if (all || inst.rec.State != record.StateTerminated) && visible(inst.rec.OwnerID) {
			out = append(out, inst.record())
		}
	}
	slices.SortFunc(out, func(a, b record.Instance) int {
		return cmp.Or(a.LaunchTime.Compare(b.LaunchTime), strings.Compare(a.ID, b.ID))
	})
	return out
}

// forget removes instances terminated over an hour ago, with their directories.
func (m *Manager) forget() {
	m.mu.Lock()
	var old []string
	for id, inst := range m.all {
		if forgotten(inst.rec) {
			old = append(old, id)
		}
	}
	m.mu.Unlock()
	for _, id := range old {
		if err := m.DB.DeleteInstance(id); err != nil {
			log.L.WithError(err).WithField("instance", id).Warn("forget terminated instance")
			continue
		}
		os.RemoveAll(m.layout.Dir(id))
		m.mu.Lock()
		delete(m.all, id)
		m.mu.Unlock()
	}
}

// Console is what the console tracker needs of an instance's console.
func (m *Manager) Console(rec record.Instance) console.Console {
	return console.Console{ID: rec.ID, Path: filepath.Join(m.layout.Dir(rec.ID), hypervisor.ConsoleFile),
		Start: rec.ConsoleStart, Running: rec.State == record.StateRunning}
}

// Consoles are the consoles of every instance kilnd keeps.
func (m *Manager) Consoles() []console.Console {
	recs := m.List(true, func(string) bool { return true })
	out := make([]console.Console, len(recs))
	for i, rec := range recs {
		out[i] = m.Console(rec)
	}
	return out
}
