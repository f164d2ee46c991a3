package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"kiln/daemon/api"
	"kiln/hypervisor"
	"kiln/images"
	"kiln/volumes"
)

// Instance states, as in the cloud.
const (
	statePending      = "pending"
	stateRunning      = "running"
	stateStopping     = "stopping"
	stateStopped      = "stopped"
	stateShuttingDown = "shutting-down"
	stateTerminated   = "terminated"
)

const (
	instancePrefix = "i-"
	volumePrefix   = "vol-"
	// terminatedKept is how long a terminated instance stays visible.
	terminatedKept = time.Hour
	// stopGrace is how long a guest gets to power off on the ACPI button.
	stopGrace = api.StopGrace
	maxCount  = 16
)

var (
	bucketInstances = []byte("instances")
	bucketVolumes   = []byte("volumes")
	bucketEvents    = []byte("events")
)

// InstanceTypes are the built-in sizes.
var InstanceTypes = []api.InstanceType{
	{Name: "nano", CPUs: 1, MemoryMiB: 256},
	{Name: "micro", CPUs: 1, MemoryMiB: 512},
	{Name: "small", CPUs: 1, MemoryMiB: 1024},
	{Name: "medium", CPUs: 2, MemoryMiB: 2048},
	{Name: "large", CPUs: 2, MemoryMiB: 4096},
}

const defaultInstanceType = "micro"

// instanceRecord is an instance's record in the metadata DB.
type instanceRecord struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	ImageID        string            `json:"imageId"`
	OwnerID        string            `json:"ownerId"`
	State          string            `json:"state"`
	StateReason    string            `json:"stateReason,omitempty"`
	InstanceType   string            `json:"instanceType,omitempty"`
	CPUs           int               `json:"cpus"`
	MemoryMiB      int               `json:"memoryMiB"`
	Accel          string            `json:"accelerator"`
	RootDeviceType string            `json:"rootDeviceType"`
	RootDeviceName string            `json:"rootDeviceName"`
	Kernel         digest.Digest     `json:"kernel,omitempty"`
	Initrd         digest.Digest     `json:"initrd,omitempty"`
	Cmdline        string            `json:"cmdline,omitempty"`
	Mappings       []instanceMapping `json:"blockDeviceMappings"`
	Seed           bool              `json:"seed,omitempty"`
	SeedDevice     string            `json:"seedDevice,omitempty"` // the device the seed takes in the guest
	LaunchTime     time.Time         `json:"launchTime"`
	TerminatedAt   time.Time         `json:"terminatedAt,omitzero"`
	PID            int               `json:"pid,omitempty"`
	// QEMUSlot picks the user its QEMU runs as (qemuUsers), kept for its life.
	QEMUSlot uint32 `json:"qemuSlot,omitempty"`
	// ConsoleStart is the console log's size when QEMU last started: what the current
	// boot printed comes after it.
	ConsoleStart int64 `json:"consoleStart,omitempty"`
	// ForceOffAt is, while a stop waits for the guest to answer the power button, when
	// kilnd stops waiting and forces it off.
	ForceOffAt time.Time `json:"forceOffAt,omitzero"`
}

type instanceMapping struct {
	DeviceName          string `json:"deviceName"`
	VolumeID            string `json:"volumeId"`
	DeleteOnTermination bool   `json:"deleteOnTermination"`
}

// volumeRecord is a volume: a qcow2 overlay over a layer chain, or a blank one.
type volumeRecord struct {
	ID                  string          `json:"id"`
	OwnerID             string          `json:"ownerId"`
	InstanceID          string          `json:"instanceId,omitempty"`
	DeviceName          string          `json:"deviceName,omitempty"`
	SnapshotID          string          `json:"snapshotId,omitempty"`
	Chain               []digest.Digest `json:"chain,omitempty"` // layers under it, bottom to top
	SizeGiB             int64           `json:"sizeGiB"`
	DeleteOnTermination bool            `json:"deleteOnTermination"`
	CreateTime          time.Time       `json:"createTime"`
	// Standalone is a volume made on its own (kiln volume create), not at a launch: it
	// outlives instances, and InstanceID is the one it is attached to, if any.
	Standalone bool `json:"standalone,omitempty"`
	// Port is the PCIe root port a volume hot-plugged into a running instance uses; a
	// restart of the instance puts it with the others.
	Port string `json:"port,omitempty"`
	// Frozen are files (in the volume's directory) that were the volume's top until a
	// live capture put a new top on them, bottom to top, between Chain and the top. One
	// with a Layer is in the store as that layer (and in Chain): its file is kept only
	// while the QEMU that opened it runs.
	Frozen []frozenFile `json:"frozen,omitempty"`
}

type frozenFile struct {
	Name  string        `json:"name"`
	Layer digest.Digest `json:"layer,omitempty"`
}

// pending are the volume's files that are not in the store yet: frozen ones not
// captured, then the top.
func (m *instances) pending(v *volumeRecord) []string {
	var files []string
	for _, f := range v.Frozen {
		if f.Layer == "" {
			files = append(files, filepath.Join(m.volumeDir(v), f.Name))
		}
	}
	return append(files, m.volumePath(v))
}

// event is one entry of the daemon's event log.
type event struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Instance string    `json:"instance,omitempty"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// instance is a live instance: its record and, while QEMU runs, its machine.
type instance struct {
	op       sync.Mutex // one lifecycle operation at a time
	rec      instanceRecord
	machine  *hypervisor.Machine
	guestOff bool // QEMU said the guest shut itself down
}

// instances keeps every instance's record and machine. Records change only through
// set, which writes the DB (with an event) before the cache.
type instances struct {
	db     *bolt.DB
	store  *images.Store
	tool   volumes.Tool
	qemu   string
	accel  string
	users  qemuUsers
	boot   bootCopies
	root   string
	ops    *sync.WaitGroup
	opsCtx context.Context
	placer placer
	// quota gives a user's limits, as the settings say now.
	quota func(user string) quota

	mu   sync.Mutex
	all  map[string]*instance
	vols map[string]*volumeRecord
	// volsReserved and volGiBReserved are the volumes admitted (admitVolumes) and not
	// yet in vols, and their sizes, per owner.
	volsReserved, volGiBReserved reservation
	// volsBusy are the volumes an attach, detach or delete is working on (claimVolume).
	volsBusy map[string]bool
}

func newInstances(ctx context.Context, s *server) (*instances, error) {
	m := &instances{db: s.store.DB(), store: s.store, tool: s.builder.Tool, qemu: s.cfg.Qemu, accel: s.accel,
		users: newQEMUUsers(s.accel, s.cfg.KVMDevice), root: s.cfg.Root, ops: &s.ops, opsCtx: s.opsCtx, all: map[string]*instance{}, vols: map[string]*volumeRecord{},
		quota: func(user string) quota { return s.settings.Load().Quotas.of(user) }}
	err := m.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketInstances, bucketVolumes, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketVolumes).ForEach(func(k, v []byte) error {
			var vr volumeRecord
			if err := json.Unmarshal(v, &vr); err != nil {
				return fmt.Errorf("volume record %s: %w", k, err)
			}
			m.vols[vr.ID] = &vr
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
			inst := &instance{}
			if err := json.Unmarshal(v, &inst.rec); err != nil {
				return fmt.Errorf("instance record %s: %w", k, err)
			}
			m.all[inst.rec.ID] = inst
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("metadata db: %w", err)
	}
	return m, nil
}

func (m *instances) dir(id string) string { return filepath.Join(m.root, "instances", id) }

func (m *instances) volumePath(v *volumeRecord) string {
	return filepath.Join(m.volumeDir(v), v.ID+".qcow2")
}

// volumeDir is where a volume's files live: its instance's directory, or, for a volume
// made on its own, <root>/volumes (attached or not).
func (m *instances) volumeDir(v *volumeRecord) string {
	if v.Standalone {
		return filepath.Join(m.root, "volumes")
	}
	return m.dir(v.InstanceID)
}

// update is set where no caller can be handed the error (a background operation, a
// cleanup after a failure): a record that could not be written is logged, with what it
// was to record.
func (m *instances) update(inst *instance, what string, change func(r *instanceRecord)) {
	if err := m.set(inst, change); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Errorf("record the instance %s", what)
	}
}

// set applies change to the instance's record, writes it with an event for a state
// change, then keeps it. The caller holds inst.op (or is creating the instance).
func (m *instances) set(inst *instance, change func(r *instanceRecord)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := inst.rec
	rec.Mappings = append([]instanceMapping(nil), inst.rec.Mappings...)
	change(&rec)
	err := m.db.Update(func(tx *bolt.Tx) error {
		if err := putRecord(tx, bucketInstances, rec.ID, rec); err != nil {
			return err
		}
		if rec.State != inst.rec.State {
			return addEvent(tx, event{Time: time.Now().UTC(), Type: "instance.state", Instance: rec.ID,
				From: inst.rec.State, To: rec.State, Reason: rec.StateReason})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("instance %s: %w", rec.ID, err)
	}
	if rec.State != inst.rec.State {
		log.L.WithField("instance", rec.ID).WithField("reason", rec.StateReason).Infof("instance %s → %s", inst.rec.State, rec.State)
	}
	inst.rec = rec
	m.all[rec.ID] = inst
	return nil
}

func putRecord(tx *bolt.Tx, bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key), b)
}

func addEvent(tx *bolt.Tx, ev event) error {
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	key := binary.BigEndian.AppendUint64(nil, seq)
	v, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

func (m *instances) putVolume(v *volumeRecord) error {
	if err := m.db.Update(func(tx *bolt.Tx) error { return putRecord(tx, bucketVolumes, v.ID, v) }); err != nil {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	m.mu.Lock()
	m.vols[v.ID] = v
	m.mu.Unlock()
	return nil
}

// deleteVolume removes a volume's files and record.
func (m *instances) deleteVolume(v *volumeRecord) error {
	for _, f := range v.Frozen {
		os.Remove(filepath.Join(m.volumeDir(v), f.Name))
	}
	if err := os.Remove(m.volumePath(v)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	if err := m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketVolumes).Delete([]byte(v.ID)) }); err != nil {
		return fmt.Errorf("volume %s: %w", v.ID, err)
	}
	m.mu.Lock()
	delete(m.vols, v.ID)
	m.mu.Unlock()
	return nil
}

// roots lists every blob instances need, for GC: the layers under each volume, and the
// kernel and initrd of each instance that is not terminated.
func (m *instances) roots() []digest.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []digest.Digest
	for _, v := range m.vols {
		out = append(out, v.Chain...)
	}
	for _, inst := range m.all {
		if inst.rec.State != stateTerminated && inst.rec.Kernel != "" {
			out = append(out, inst.rec.Kernel, inst.rec.Initrd)
		}
	}
	return out
}

// record returns a copy of the instance's record, for readers that do not hold
// inst.op (writers hold it and m.mu).
func (m *instances) record(inst *instance) instanceRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return inst.rec
}

// get finds the instance ref names (an i- id or a name) among those the caller may
// see; an instance the caller may not see is not found.
func (m *instances) get(ref string, visible func(owner string) bool) (*instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst, ok := m.all[ref]; ok && visible(inst.rec.OwnerID) {
		return inst, nil
	}
	var found *instance
	for _, inst := range m.all {
		if inst.rec.Name == ref && inst.rec.State != stateTerminated && visible(inst.rec.OwnerID) {
			found = inst
		}
	}
	if found == nil {
		return nil, fmt.Errorf("instance %q: no instance has that id or name; see kiln ps -a: %w", ref, errdefs.ErrNotFound)
	}
	return found, nil
}

// list returns copies of the records the caller may see, oldest first; terminated ones
// only with all. Instances terminated over an hour ago are forgotten here.
func (m *instances) list(all bool, visible func(owner string) bool) []instanceRecord {
	m.forget()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []instanceRecord
	for _, inst := range m.all {
		if (all || inst.rec.State != stateTerminated) && visible(inst.rec.OwnerID) {
			out = append(out, inst.rec)
		}
	}
	sortRecords(out)
	return out
}

func sortRecords(rs []instanceRecord) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && (rs[j].LaunchTime.Before(rs[j-1].LaunchTime) ||
			rs[j].LaunchTime.Equal(rs[j-1].LaunchTime) && rs[j].ID < rs[j-1].ID); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// forget removes instances terminated over an hour ago, with their directories.
func (m *instances) forget() {
	m.mu.Lock()
	var old []string
	for id, inst := range m.all {
		if inst.rec.State == stateTerminated && time.Since(inst.rec.TerminatedAt) > terminatedKept {
			old = append(old, id)
		}
	}
	m.mu.Unlock()
	for _, id := range old {
		if err := m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketInstances).Delete([]byte(id)) }); err != nil {
			log.L.WithError(err).WithField("instance", id).Warn("forget terminated instance")
			continue
		}
		os.RemoveAll(m.dir(id))
		m.mu.Lock()
		delete(m.all, id)
		m.mu.Unlock()
	}
}

// hostLimits is what one instance may have here: the host's CPUs and memory.
func hostLimits() (cpus, memoryMiB int) {
	cpus = runtime.NumCPU()
	memoryMiB = 1 << 20
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB"))); err == nil {
					memoryMiB = kb / 1024
				}
			}
		}
	}
	return cpus, memoryMiB
}

// size picks the instance's size from the request: a type, or cpus and memory (each
// defaulting to the default type's), checked against the host.
func size(req api.RunInstancesRequest) (typ string, cpus, mem int, err error) {
	t := req.InstanceType
	if t == "" && req.CPUs == nil && req.MemoryMiB == nil {
		t = defaultInstanceType
	}
	if t != "" {
		if req.CPUs != nil || req.MemoryMiB != nil {
			return "", 0, 0, fmt.Errorf("give an instance type or --cpus/--memory, not both: %w", errdefs.ErrInvalidArgument)
		}
		for _, it := range InstanceTypes {
			if it.Name == t {
				cpus, mem = it.CPUs, it.MemoryMiB
			}
		}
		if cpus == 0 {
			var names []string
			for _, it := range InstanceTypes {
				names = append(names, fmt.Sprintf("%s (%d vCPU, %d MiB)", it.Name, it.CPUs, it.MemoryMiB))
			}
			return "", 0, 0, fmt.Errorf("instance type %q: want one of %s: %w", t, strings.Join(names, ", "), errdefs.ErrInvalidArgument)
		}
	} else {
		for _, it := range InstanceTypes {
			if it.Name == defaultInstanceType {
				cpus, mem = it.CPUs, it.MemoryMiB
			}
		}
		if req.CPUs != nil {
			cpus = *req.CPUs
		}
		if req.MemoryMiB != nil {
			mem = *req.MemoryMiB
		}
	}
	hostCPUs, hostMem := hostLimits()
	switch {
	case cpus < 1 || cpus > hostCPUs:
		return "", 0, 0, fmt.Errorf("%d vCPUs: this host has %d; give 1 to %d: %w", cpus, hostCPUs, hostCPUs, errdefs.ErrInvalidArgument)
	case mem < 64 || mem > hostMem:
		return "", 0, 0, fmt.Errorf("%d MiB of memory: give 64 MiB to %d MiB (this host's memory): %w", mem, hostMem, errdefs.ErrInvalidArgument)
	}
	return t, cpus, mem, nil
}
