package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/hypervisor"
	"kiln/images"
)

var volumeDevice = regexp.MustCompile(`^/dev/vd[b-z]$`)

// run launches instances of an image: for each, a record, a volume per block device
// mapping (an overlay on the snapshot's layers: nothing is copied), blank volumes, a
// seed for user data, and QEMU started detached; it answers once QEMU does. Anything
// refused or failed leaves nothing behind.
func (m *instances) run(ctx context.Context, owner string, im *images.Image, req api.RunInstancesRequest) ([]*instance, error) {
	if im.State != images.StateAvailable {
		return nil, fmt.Errorf("image %s is %s, not available: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
	}
	typ, cpus, mem, err := size(req)
	if err != nil {
		return nil, err
	}
	count := req.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxCount {
		return nil, fmt.Errorf("count %d: give 1 to %d: %w", count, maxCount, errdefs.ErrInvalidArgument)
	}
	if len(req.UserData) > api.MaxUserData {
		return nil, fmt.Errorf("user data is %d bytes; at most %d: %w", len(req.UserData), api.MaxUserData, errdefs.ErrInvalidArgument)
	}
	used := map[string]bool{}
	for _, bdm := range im.BlockDeviceMappings {
		used[bdm.DeviceName] = true
	}
	for _, v := range req.Volumes {
		switch {
		case !volumeDevice.MatchString(v.DeviceName):
			return nil, fmt.Errorf("volume device %q: want /dev/vdb to /dev/vdz: %w", v.DeviceName, errdefs.ErrInvalidArgument)
		case used[v.DeviceName]:
			return nil, fmt.Errorf("volume device %s is taken: %w", v.DeviceName, errdefs.ErrInvalidArgument)
		case v.SizeGiB < 1 || v.SizeGiB > 16384:
			return nil, fmt.Errorf("volume %s: %d GiB; give 1 to 16384: %w", v.DeviceName, v.SizeGiB, errdefs.ErrInvalidArgument)
		}
		used[v.DeviceName] = true
	}
	names := make([]string, count)
	for i := range names {
		names[i] = req.Name
		if req.Name != "" && count > 1 {
			names[i] = req.Name + "-" + strconv.Itoa(i+1)
		}
		if names[i] != "" {
			if err := images.CheckName(names[i]); err != nil {
				return nil, fmt.Errorf("instance name: %w", err)
			}
		}
	}

	// All of them or none: the quota is checked for the whole count first (and again
	// as each is reserved, against concurrent launches).
	m.mu.Lock()
	err = m.admitLocked(m.quota(owner), owner, count, cpus, mem)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The volumes they get (one per mapping of the image, and those asked for) count
	// against the volume quotas; reserved until their records exist.
	var vols, gib int64
	for _, bdm := range im.BlockDeviceMappings {
		if bdm.EBS != nil {
			vols, gib = vols+1, gib+bdm.EBS.VolumeSize
		}
	}
	for _, v := range req.Volumes {
		vols, gib = vols+1, gib+v.SizeGiB
	}
	if vols > 0 {
		release, err := m.admitVolumes(m.quota(owner), owner, int64(count)*vols, int64(count)*gib)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	var out []*instance
	for i := 0; i < count; i++ {
		inst, err := m.launch(ctx, owner, im, names[i], typ, cpus, mem, req)
		if err != nil {
			return out, err
		}
		out = append(out, inst)
	}
	return out, nil
}

// reserve adds a pending record for a new instance, refusing a name the owner's live
// instances use and an instance past the owner's quota.
func (m *instances) reserve(rec instanceRecord) (*instance, error) {
	m.mu.Lock()
	for _, other := range m.all {
		if rec.Name != "" && other.rec.Name == rec.Name && other.rec.OwnerID == rec.OwnerID && other.rec.State != stateTerminated {
			m.mu.Unlock()
			return nil, fmt.Errorf("instance name %q is used by %s; choose another: %w", rec.Name, other.rec.ID, errdefs.ErrAlreadyExists)
		}
	}
	if err := m.admitLocked(m.quota(rec.OwnerID), rec.OwnerID, 1, rec.CPUs, rec.MemoryMiB); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	// Reserved: no state yet (the first event is → pending), but its owner and size
	// count against the quota.
	inst := &instance{rec: instanceRecord{ID: rec.ID, OwnerID: rec.OwnerID, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB}}
	m.all[rec.ID] = inst // reserved: the name is taken from here on
	m.mu.Unlock()
	inst.op.Lock()
	defer inst.op.Unlock()
	if err := m.set(inst, func(r *instanceRecord) { *r = rec }); err != nil {
		m.mu.Lock()
		delete(m.all, rec.ID)
		m.mu.Unlock()
		return nil, err
	}
	return inst, nil
}

func (m *instances) launch(ctx context.Context, owner string, im *images.Image, name, typ string, cpus, mem int, req api.RunInstancesRequest) (*instance, error) {
	id := images.NewID(instancePrefix)
	if name == "" {
		name = id
	}
	inst, err := m.reserve(instanceRecord{
		ID: id, Name: name, ImageID: im.ID, OwnerID: owner, State: statePending, InstanceType: typ,
		CPUs: cpus, MemoryMiB: mem, Accel: m.accel, RootDeviceType: im.RootDeviceType, RootDeviceName: im.RootDeviceName,
		Kernel: im.Kernel, Initrd: im.Initrd, Cmdline: im.Cmdline, Seed: len(req.UserData) > 0, LaunchTime: time.Now().UTC(),
	})
	if err != nil {
		return nil, err
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if err := m.prepare(ctx, inst, im, req); err != nil {
		m.discard(inst)
		return nil, err
	}
	if err := m.startMachine(ctx, inst); err != nil {
		m.discard(inst)
		return nil, err
	}
	return inst, nil
}

// prepare makes the instance's directory, volumes and seed.
func (m *instances) prepare(ctx context.Context, inst *instance, im *images.Image, req api.RunInstancesRequest) error {
	dir := m.dir(inst.rec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Layers must not go between looking them up and the volume record naming them.
	release := m.store.Hold()
	defer release()
	var mappings []instanceMapping
	for _, bdm := range im.BlockDeviceMappings {
		if bdm.EBS == nil {
			continue
		}
		chain := []digest.Digest{bdm.EBS.Layer}
		if sn, err := m.store.Snapshot(bdm.EBS.SnapshotID); err == nil {
			chain = sn.Chain
		}
		v := &volumeRecord{ID: images.NewID(volumePrefix), OwnerID: inst.rec.OwnerID, InstanceID: inst.rec.ID, DeviceName: bdm.DeviceName,
			SnapshotID: bdm.EBS.SnapshotID, Chain: chain, SizeGiB: bdm.EBS.VolumeSize, DeleteOnTermination: bdm.EBS.DeleteOnTermination,
			CreateTime: time.Now().UTC()}
		if err := m.putVolume(v); err != nil {
			return err
		}
		mappings = append(mappings, instanceMapping{DeviceName: v.DeviceName, VolumeID: v.ID, DeleteOnTermination: v.DeleteOnTermination})
		if err := m.tool.CreateOverlay(ctx, m.volumePath(v), m.store.BlobPath(chain[len(chain)-1]), v.SizeGiB<<30); err != nil {
			return err
		}
	}
	for _, spec := range req.Volumes {
		v := &volumeRecord{ID: images.NewID(volumePrefix), OwnerID: inst.rec.OwnerID, InstanceID: inst.rec.ID, DeviceName: spec.DeviceName,
			SizeGiB: spec.SizeGiB, DeleteOnTermination: true, CreateTime: time.Now().UTC()}
		if err := m.putVolume(v); err != nil {
			return err
		}
		mappings = append(mappings, instanceMapping{DeviceName: v.DeviceName, VolumeID: v.ID, DeleteOnTermination: true})
		if err := m.tool.CreateBlank(ctx, m.volumePath(v), v.SizeGiB<<30); err != nil {
			return err
		}
	}
	if len(req.UserData) > 0 {
		meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", inst.rec.ID, inst.rec.Name)
		if err := builder.WriteSeed(filepath.Join(dir, "seed.iso"), req.UserData, []byte(meta)); err != nil {
			return err
		}
	}
	seedDevice := ""
	if len(req.UserData) > 0 { // the guest sees the seed as the disk after the mapped ones
		taken := map[string]bool{}
		for _, mp := range mappings {
			taken[mp.DeviceName] = true
		}
		for l := 'a'; l <= 'z' && seedDevice == ""; l++ {
			if d := "/dev/vd" + string(l); !taken[d] {
				seedDevice = d
			}
		}
	}
	return m.set(inst, func(r *instanceRecord) { r.Mappings, r.SeedDevice = mappings, seedDevice })
}

// startMachine starts QEMU for the instance and makes it running. The caller holds
// inst.op.
func (m *instances) startMachine(ctx context.Context, inst *instance) error {
	m.dropCaptured(inst)
	m.clearPorts(inst)
	var consoleStart int64
	if st, err := os.Stat(filepath.Join(m.dir(inst.rec.ID), hypervisor.ConsoleFile)); err == nil {
		consoleStart = st.Size()
	}
	// Recorded before QEMU starts: a kilnd killed in between reattaches to it (the
	// record is pending) and counts its readiness from this boot's first line.
	if err := m.set(inst, func(r *instanceRecord) { r.ConsoleStart = consoleStart }); err != nil {
		return err
	}
	if inst.rec.QEMUSlot == 0 {
		// Chosen and recorded under m.mu (set holds it), so that instances starting
		// at once get different users.
		var slotErr error
		if err := m.set(inst, func(r *instanceRecord) { r.QEMUSlot, slotErr = m.freeSlot() }); err != nil {
			return err
		}
		if slotErr != nil {
			return slotErr
		}
	}
	spec, closeFiles, err := m.machineSpec(inst.rec)
	if err != nil {
		return err
	}
	mach, err := hypervisor.Start(ctx, m.qemu, spec)
	closeFiles()
	if err != nil {
		return err
	}
	inst.machine = mach
	m.mu.Lock()
	inst.guestOff = false
	m.mu.Unlock()
	m.watch(inst, mach)
	if err := m.placer.Place(ctx, inst.rec.ID, mach.PID, inst.rec.CPUs, inst.rec.MemoryMiB); err != nil {
		log.G(ctx).WithError(err).WithField("instance", inst.rec.ID).Warn("instance runs outside a systemd scope")
	}
	return m.set(inst, func(r *instanceRecord) {
		r.State, r.StateReason, r.PID, r.Accel, r.ConsoleStart = stateRunning, "", mach.PID, m.accel, consoleStart
	})
}

// dropCaptured removes the frozen files that live captures put in the store, now that
// no QEMU has them open: the store's layers stand in for them. The caller holds inst.op
// and no machine runs.
func (m *instances) dropCaptured(inst *instance) {
	m.mu.Lock()
	var changed []*volumeRecord
	for _, v := range m.vols {
		if v.InstanceID != inst.rec.ID || len(v.Frozen) == 0 {
			continue
		}
		c := *v
		c.Frozen = nil
		for _, f := range v.Frozen {
			if f.Layer == "" {
				c.Frozen = append(c.Frozen, f)
			}
		}
		if len(c.Frozen) != len(v.Frozen) {
			changed = append(changed, &c)
		}
	}
	m.mu.Unlock()
	for _, v := range changed {
		if err := m.renameBacking(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Warn("keep frozen files")
			continue
		}
		if err := m.putVolume(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Warn("keep frozen files")
		}
	}
	for _, v := range changed {
		entries, _ := os.ReadDir(m.volumeDir(v))
		keep := map[string]bool{}
		for _, f := range v.Frozen {
			keep[f.Name] = true
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), v.ID+".frozen-") && !keep[e.Name()] {
				os.Remove(filepath.Join(m.volumeDir(v), e.Name()))
			}
		}
	}
}

// renameBacking makes each file of the volume that names a frozen file about to go (one
// whose layer stands in for it: not in v.Frozen any more) name that layer instead, so
// that every header names the file below it in the chain (volumes.OpenChain).
func (m *instances) renameBacking(v *volumeRecord) error {
	m.mu.Lock()
	old := m.vols[v.ID]
	m.mu.Unlock()
	if old == nil {
		return nil
	}
	files := append(append([]frozenFile(nil), old.Frozen...), frozenFile{Name: filepath.Base(m.volumePath(v))})
	for i := 1; i < len(files); i++ {
		below, above := files[i-1], files[i]
		if below.Layer == "" || above.Layer != "" {
			continue // the file below stays, or the one above is a layer already
		}
		path := filepath.Join(m.volumeDir(v), above.Name)
		if err := m.tool.Rename(context.Background(), path, m.store.BlobPath(below.Layer)); err != nil {
			return err
		}
	}
	return nil
}

// watch follows a machine until QEMU exits: a guest that shut itself down is noted, a
// guest that failed (a kernel panic, an accelerator's internal error) is stopped with
// the reason, and an exit nobody asked for makes the instance stopped (or,
// instance-store, terminated).
func (m *instances) watch(inst *instance, mach *hypervisor.Machine) {
	events, err := mach.Watch(context.Background())
	go func() {
		if err == nil {
			for ev := range events {
				switch ev.Kind {
				case hypervisor.GuestPoweredOff:
					m.mu.Lock()
					inst.guestOff = true
					m.mu.Unlock()
				case hypervisor.GuestReset:
					log.L.WithField("instance", inst.rec.ID).Info(ev.Reason)
				case hypervisor.GuestFailed:
					// Not an operation kilnd waits for at shutdown: a failure
					// seen then is found again by the next start's reconcile.
					if m.opsCtx.Err() == nil {
						go m.fail(inst, mach, ev.Reason)
					}
				}
			}
		}
		<-mach.Exited()
		inst.op.Lock()
		defer inst.op.Unlock()
		if inst.machine != mach {
			return // a stop, a terminate or a failure took care of it
		}
		inst.machine = nil
		m.mu.Lock()
		reason := "QEMU exited unexpectedly; see qemu.log in the instance directory"
		if inst.guestOff {
			reason = "the guest shut itself down"
		}
		m.mu.Unlock()
		m.gone(inst, reason)
	}()
}

// fail stops an instance whose guest cannot go on and records why: its vCPUs run no
// more (a panicked kernel, a KVM that hit an internal error), so leaving its QEMU up
// would only hold its memory, or spin.
func (m *instances) fail(inst *instance, mach *hypervisor.Machine, reason string) {
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.machine != mach {
		return // stopped or restarted meanwhile
	}
	log.L.WithField("instance", inst.rec.ID).WithField("reason", reason).Warn("the guest failed; stopping its QEMU")
	m.halt(inst, true)
	m.gone(inst, reason)
}

// gone records that an instance's QEMU is gone without a stop: volume-backed ones are
// stopped, instance-store ones terminated. The caller holds inst.op.
func (m *instances) gone(inst *instance, reason string) {
	if inst.rec.RootDeviceType == "instance-store" {
		m.finishTerminate(inst, reason)
		return
	}
	if err := m.set(inst, func(r *instanceRecord) { r.State, r.StateReason, r.PID = stateStopped, reason, 0 }); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record stopped instance")
	}
}

// discard removes what a failed launch made: machine, volumes, directory, record.
func (m *instances) discard(inst *instance) {
	if inst.machine != nil {
		inst.machine.Stop(context.Background(), 0)
		inst.machine = nil
	}
	m.deleteVolumes(inst, true)
	os.RemoveAll(m.dir(inst.rec.ID))
	id := inst.rec.ID
	if err := m.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketInstances).Delete([]byte(id)) }); err != nil {
		log.L.WithError(err).WithField("instance", id).Error("remove the record of a failed launch")
	}
	m.mu.Lock()
	delete(m.all, id)
	m.mu.Unlock()
}

// deleteVolumes deletes the instance's volumes (all, or those deleted on termination).
func (m *instances) deleteVolumes(inst *instance, all bool) {
	m.mu.Lock()
	var vs []*volumeRecord
	for _, v := range m.vols {
		if v.InstanceID == inst.rec.ID && !v.Standalone && (all || v.DeleteOnTermination) {
			vs = append(vs, v)
		}
	}
	m.mu.Unlock()
	for _, v := range vs {
		if err := m.deleteVolume(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Error("delete volume")
		}
	}
}

// stop begins a stop: the state becomes stopping at once and the rest runs as an
// operation. force skips the guest's clean shutdown. Stopping a stopped instance does
// nothing.
func (m *instances) stop(inst *instance, by string, force bool) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	switch {
	case inst.rec.RootDeviceType == "instance-store":
		return fmt.Errorf("instance %s has an instance-store root device and cannot be stopped; terminate it instead: %w",
			inst.rec.ID, errdefs.ErrNotImplemented)
	case inst.rec.State == stateStopped || inst.rec.State == stateStopping:
		return nil // already: stop is idempotent, as in the cloud
	case inst.rec.State != stateRunning:
		return fmt.Errorf("instance %s is %s; only a running instance can be stopped: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	if err := m.set(inst, func(r *instanceRecord) { r.State, r.StateReason = stateStopping, "stopped by "+by }); err != nil {
		return err
	}
	m.finishStop(inst, force)
	return nil
}

// finishStop stops a stopping instance's QEMU as an operation and records it stopped.
func (m *instances) finishStop(inst *instance, force bool) {
	m.ops.Go(func() {
		inst.op.Lock()
		defer inst.op.Unlock()
		note := m.halt(inst, force)
		if err := m.set(inst, func(r *instanceRecord) {
			r.State, r.PID, r.StateReason = stateStopped, 0, withNote(r.StateReason, note)
		}); err != nil {
			log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record stopped instance")
		}
	})
}

// forcedOff is what a stop adds to its reason when the guest ignored the power button.
var forcedOff = fmt.Sprintf("forced off after %d s without a shutdown", int(stopGrace/time.Second))

// halt stops the instance's QEMU, if it runs: the ACPI power button, up to stopGrace
// for the guest to power off (not with force), then the machine's Stop (QEMU's quit,
// SIGTERM, SIGKILL). While it waits for the guest the record says until when
// (ForceOffAt). A guest that fails meanwhile (a panic: it will never power off) ends
// the wait at once. halt returns what a stop's reason should add: forcedOff, the
// guest's failure, or "" for a clean shutdown or a stop that was forced from the start.
// The caller holds inst.op.
func (m *instances) halt(inst *instance, force bool) (note string) {
	mach := inst.machine
	if mach == nil {
		return ""
	}
	inst.machine = nil // the watcher leaves it to us
	l := log.L.WithField("instance", inst.rec.ID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.opsCtx), stopGrace+time.Minute)
	defer cancel()
	switch {
	case force:
	case mach.Failure() != "":
		note = mach.Failure()
	default:
		if err := mach.Powerdown(ctx); err != nil {
			l.WithError(err).Warn("power button; forcing the instance off")
			note = "forced off: QEMU did not take the power button"
			break
		}
		deadline := time.Now().Add(stopGrace)
		if err := m.set(inst, func(r *instanceRecord) { r.ForceOffAt = deadline.UTC() }); err != nil {
			l.WithError(err).Error("record when the instance is forced off")
		}
		t := time.NewTimer(stopGrace)
		select {
		case <-mach.Exited():
		case <-mach.Failed():
			note = mach.Failure()
		case <-t.C:
			note = forcedOff
			l.Warn("the guest ignored the power button; forcing it off")
		case <-ctx.Done():
		}
		t.Stop()
		if err := m.set(inst, func(r *instanceRecord) { r.ForceOffAt = time.Time{} }); err != nil {
			l.WithError(err).Error("record when the instance is forced off")
		}
	}
	select {
	case <-mach.Exited():
	default:
		if err := mach.Stop(ctx, 0); err != nil {
			l.WithError(err).Error("stop QEMU")
		}
	}
	return note
}

// withNote is a reason with what halt added to it.
func withNote(reason, note string) string {
	if note == "" {
		return reason
	}
	return reason + ": " + note
}

// start starts a stopped instance again, with its volumes as they were. Starting a
// running one does nothing (kiln-instance@.service relies on both).
func (m *instances) start(ctx context.Context, inst *instance) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	switch inst.rec.State {
	case stateRunning, statePending:
		return nil // already: start is idempotent, as in the cloud
	case stateStopped:
	default:
		return fmt.Errorf("instance %s is %s; only a stopped instance can be started: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	m.mu.Lock()
	err := m.admitLocked(m.quota(inst.rec.OwnerID), inst.rec.OwnerID, 1, inst.rec.CPUs, inst.rec.MemoryMiB)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := m.set(inst, func(r *instanceRecord) { r.State, r.StateReason = statePending, "" }); err != nil {
		return err
	}
	if err := m.startMachine(ctx, inst); err != nil {
		m.update(inst, "stopped after a failed start", func(r *instanceRecord) { r.State, r.StateReason = stateStopped, "start failed: "+err.Error() })
		return err
	}
	return nil
}

// rebootWait bounds a reboot: the reset command and QEMU carrying it out.
const rebootWait = time.Minute

// reboot resets a running instance (the machine's reset button).
func (m *instances) reboot(inst *instance) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.State != stateRunning || inst.machine == nil {
		return fmt.Errorf("instance %s is %s; only a running instance can be rebooted: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(m.opsCtx, rebootWait)
	defer cancel()
	if err := inst.machine.Reboot(ctx); err != nil {
		return fmt.Errorf("instance %s: reboot: %w", inst.rec.ID, err)
	}
	// Ready means ready since this reset: what the guest printed before no longer counts.
	// The size is taken once QEMU has carried out the reset (Reboot waits for it).
	if st, err := os.Stat(filepath.Join(m.dir(inst.rec.ID), hypervisor.ConsoleFile)); err == nil {
		if err := m.set(inst, func(r *instanceRecord) { r.ConsoleStart = st.Size() }); err != nil {
			return err
		}
	}
	log.L.WithField("instance", inst.rec.ID).Info("instance rebooted")
	return nil
}

// terminate begins a termination: shutting-down at once, then (as an operation) the
// machine stops and the volumes deleted on termination go.
func (m *instances) terminate(inst *instance, by string, force bool) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.State == stateTerminated || inst.rec.State == stateShuttingDown {
		return fmt.Errorf("instance %s is already %s: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	if err := m.set(inst, func(r *instanceRecord) { r.State, r.StateReason = stateShuttingDown, "terminated by "+by }); err != nil {
		return err
	}
	m.haltAndTerminate(inst, force)
	return nil
}

// haltAndTerminate stops a shutting-down instance's QEMU as an operation and finishes
// its termination.
func (m *instances) haltAndTerminate(inst *instance, force bool) {
	m.ops.Go(func() {
		inst.op.Lock()
		defer inst.op.Unlock()
		note := m.halt(inst, force)
		m.finishTerminate(inst, withNote(inst.rec.StateReason, note))
	})
}

// clearPorts forgets the hot-plug ports of the instance's volumes: a new QEMU puts every
// volume on its root bus. The caller holds inst.op and no machine runs.
func (m *instances) clearPorts(inst *instance) {
	m.mu.Lock()
	var vs []volumeRecord
	for _, v := range m.vols {
		if v.InstanceID == inst.rec.ID && v.Port != "" {
			c := *v
			c.Port = ""
			vs = append(vs, c)
		}
	}
	m.mu.Unlock()
	for i := range vs {
		if err := m.putVolume(&vs[i]); err != nil {
			log.L.WithError(err).WithField("volume", vs[i].ID).Error("record that a volume left its hot-plug port")
		}
	}
}

// finishTerminate deletes what a terminated instance leaves (its volumes deleted on
// termination, its seed), detaches the standalone volumes it had, and records it
// terminated. The caller holds inst.op.
func (m *instances) finishTerminate(inst *instance, reason string) {
	m.deleteVolumes(inst, false)
	m.mu.Lock()
	var standalone []*volumeRecord
	for _, v := range m.vols {
		if v.InstanceID == inst.rec.ID && v.Standalone {
			standalone = append(standalone, v)
		}
	}
	m.mu.Unlock()
	for _, v := range standalone {
		if err := m.unplug(inst, v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Error("detach volume of terminated instance")
		}
	}
	os.Remove(filepath.Join(m.dir(inst.rec.ID), "seed.iso"))
	if err := m.set(inst, func(r *instanceRecord) {
		r.State, r.StateReason, r.PID, r.TerminatedAt = stateTerminated, reason, 0, time.Now().UTC()
	}); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record terminated instance")
	}
}

// reconcile runs at start, before kilnd serves: it reattaches to each QEMU that still
// runs, and records the vanished ones as stopped (volume-backed) or terminated
// (instance-store), with a reason. One instance's failure never stops the others.
func (m *instances) reconcile(ctx context.Context) {
	m.mu.Lock()
	var todo []*instance
	for _, inst := range m.all {
		switch inst.rec.State {
		case statePending, stateRunning, stateStopping, stateShuttingDown:
			todo = append(todo, inst)
		}
	}
	m.mu.Unlock()
	for _, inst := range todo {
		l := log.G(ctx).WithField("instance", inst.rec.ID)
		inst.op.Lock()
		mach, err := hypervisor.Attach(ctx, m.dir(inst.rec.ID))
		if err == nil {
			inst.machine = mach
			m.watch(inst, mach)
			l.WithField("pid", mach.PID).Info("reattached to running instance")
		}
		switch st := inst.rec.State; {
		case err != nil && st == stateShuttingDown:
			m.finishTerminate(inst, inst.rec.StateReason)
		case err != nil:
			l.WithError(err).Warn("instance's QEMU is gone")
			m.gone(inst, "QEMU was gone when kilnd started: "+err.Error())
		case st == stateStopping: // a stop was under way when kilnd stopped: finish it
			m.finishStop(inst, false)
		case st == stateShuttingDown:
			m.haltAndTerminate(inst, false)
		case st == statePending:
			m.update(inst, "running after a reattach", func(r *instanceRecord) { r.State, r.PID = stateRunning, mach.PID })
		}
		inst.op.Unlock()
	}
}

// toAPI is the API's view of an instance record.
func (m *instances) toAPI(rec instanceRecord) api.Instance {
	out := api.Instance{
		ID: rec.ID, Name: rec.Name, ImageID: rec.ImageID, OwnerID: rec.OwnerID, State: rec.State, StateReason: rec.StateReason,
		InstanceType: rec.InstanceType, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB, Accelerator: rec.Accel,
		RootDeviceType: rec.RootDeviceType, RootDeviceName: rec.RootDeviceName, LaunchTime: rec.LaunchTime, PID: rec.PID,
		BlockDeviceMappings: []api.InstanceBlockDeviceMapping{},
	}
	if !rec.ForceOffAt.IsZero() && (rec.State == stateStopping || rec.State == stateShuttingDown) {
		t := rec.ForceOffAt
		out.ForceOffAt = &t
	}
	for _, mp := range rec.Mappings {
		out.BlockDeviceMappings = append(out.BlockDeviceMappings, api.InstanceBlockDeviceMapping(mp))
	}
	return out
}
