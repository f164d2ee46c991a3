package instances

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/console"
	"kiln/daemon/machines"
	"kiln/daemon/record"
	"kiln/hypervisor"
	"kiln/images"
	"kiln/internal/ids"
)

var volumeDevice = regexp.MustCompile(`^/dev/vd[b-z]$`)

// Run launches instances of an image: for each, a record, a volume per block device
// mapping (an overlay on the snapshot's layers: nothing is copied), blank volumes, a
// seed for user data, and QEMU started detached; it answers once QEMU does. Anything
// refused or failed leaves nothing behind.
// Key is the key pair an instance is launched with: its name and public key.
type Key struct{ Name, PublicKey string }

func (m *Manager) Run(ctx context.Context, owner string, im *images.Image, req api.RunInstancesRequest, key Key) ([]*Instance, error) {
	if im.State != images.StateAvailable {
		return nil, fmt.Errorf("image %s is %s, not available: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
	}
	typ, cpus, mem, err := machines.Size(req)
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
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return nil, err
	}
	if len(req.UserData) > api.MaxUserData {
		return nil, fmt.Errorf("user data is %d bytes; at most %d: %w", len(req.UserData), api.MaxUserData, errdefs.ErrInvalidArgument)
	}
	used, imageGiB := map[string]bool{}, map[string]int64{}
	for _, bdm := range im.BlockDeviceMappings {
		used[bdm.DeviceName] = true
		if bdm.EBS != nil {
			imageGiB[bdm.DeviceName] = bdm.EBS.VolumeSize
		}
	}
	changed := map[string]bool{}
	for _, v := range req.Mappings { // changes of the image's volumes
		size, ok := imageGiB[v.DeviceName]
		switch {
		case !ok:
			return nil, fmt.Errorf("mapping %s: the image has no volume there (its devices: %s): %w", v.DeviceName, strings.Join(slices.Sorted(maps.Keys(imageGiB)), ", "), errdefs.ErrInvalidArgument)
		case changed[v.DeviceName]:
			return nil, fmt.Errorf("mapping %s is given twice: %w", v.DeviceName, errdefs.ErrInvalidArgument)
		case v.SizeGiB != 0 && (v.SizeGiB < size || v.SizeGiB > api.MaxVolumeGiB):
			return nil, fmt.Errorf("volume %s: %d GiB; its snapshot is %d GiB: give %d to %d (or 0 to keep it): %w",
				v.DeviceName, v.SizeGiB, size, size, api.MaxVolumeGiB, errdefs.ErrInvalidArgument)
		}
		changed[v.DeviceName] = true
	}
	for _, v := range req.Volumes {
		switch {
		case !volumeDevice.MatchString(v.DeviceName):
			return nil, fmt.Errorf("volume device %q: want /dev/vdb to /dev/vdz: %w", v.DeviceName, errdefs.ErrInvalidArgument)
		case used[v.DeviceName]:
			return nil, fmt.Errorf("volume device %s is taken: %w", v.DeviceName, errdefs.ErrInvalidArgument)
		case v.SizeGiB < 1 || v.SizeGiB > api.MaxVolumeGiB:
			return nil, fmt.Errorf("volume %s: %d GiB; give 1 to %d: %w", v.DeviceName, v.SizeGiB, api.MaxVolumeGiB, errdefs.ErrInvalidArgument)
		}
		used[v.DeviceName] = true
	}
	ports, err := machines.Ports(req.Publish)
	if err != nil {
		return nil, err
	}
	switch req.MetadataTokens {
	case "", api.MetadataTokensOptional, api.MetadataTokensRequired:
	default:
		return nil, fmt.Errorf("metadata tokens %q: want %s or %s: %w", req.MetadataTokens, api.MetadataTokensOptional, api.MetadataTokensRequired, errdefs.ErrInvalidArgument)
	}
	if len(ports) > 0 && count > 1 {
		return nil, fmt.Errorf("published ports go to one instance; launch %d instances one at a time, each with its own --publish: %w", count, errdefs.ErrInvalidArgument)
	}
	names := make([]string, count)
	for i := range names {
		names[i] = req.Name
		if req.Name != "" && count > 1 {
			names[i] = req.Name + "-" + strconv.Itoa(i+1)
		}
		if names[i] != "" {
			if err := record.CheckName(names[i]); err != nil {
				return nil, err
			}
		}
	}

	// All of them or none: the quota is checked for the whole count first (and again
	// as each is reserved, against concurrent launches).
	m.mu.Lock()
	err = m.admitLocked(m.Quota(owner), owner, count, cpus, mem)
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
	for _, v := range req.Mappings {
		gib += max(v.SizeGiB-imageGiB[v.DeviceName], 0) // counted above at the snapshot's size
	}
	for _, v := range req.Volumes {
		vols, gib = vols+1, gib+v.SizeGiB
	}
	if vols > 0 {
		release, err := m.Vols.Admit(owner, int64(count)*vols, int64(count)*gib)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	var out []*Instance
	for i := 0; i < count; i++ {
		inst, err := m.launch(ctx, owner, im, names[i], typ, cpus, mem, ports, req, key)
		if err != nil {
			return out, err
		}
		out = append(out, inst)
	}
	return out, nil
}

// reserve adds a pending record for a new instance, refusing a name the owner's live
// instances use and an instance past the owner's quota.
func (m *Manager) reserve(rec record.Instance) (*Instance, error) {
	m.mu.Lock()
	for _, other := range m.all {
		if rec.Name != "" && other.rec.Name == rec.Name && other.rec.OwnerID == rec.OwnerID && other.rec.State != record.StateTerminated {
			m.mu.Unlock()
			return nil, fmt.Errorf("instance name %q is used by %s; choose another: %w", rec.Name, other.rec.ID, errdefs.ErrAlreadyExists)
		}
	}
	if err := m.admitLocked(m.Quota(rec.OwnerID), rec.OwnerID, 1, rec.CPUs, rec.MemoryMiB); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	// Reserved: no state yet (the first event is → pending), but its owner and size
	// count against the quota.
	inst := &Instance{rec: record.Instance{ID: rec.ID, OwnerID: rec.OwnerID, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB}, tags: rec.Tags}
	m.all[rec.ID] = inst // reserved: the name is taken from here on
	m.mu.Unlock()
	inst.op.Lock()
	defer inst.op.Unlock()
	if err := m.set(inst, func(r *record.Instance) { *r = rec }); err != nil {
		m.mu.Lock()
		delete(m.all, rec.ID)
		m.mu.Unlock()
		return nil, err
	}
	return inst, nil
}

func (m *Manager) launch(ctx context.Context, owner string, im *images.Image, name, typ string, cpus, mem int, ports []record.Port, req api.RunInstancesRequest, key Key) (*Instance, error) {
	mode, err := bootMode(im)
	if err != nil {
		return nil, err
	}
	id := ids.NewID(record.InstancePrefix)
	if name == "" {
		name = id
	}
	inst, err := m.reserve(record.Instance{
		ID: id, Name: name, ImageID: im.ID, OwnerID: owner, State: record.StatePending, InstanceType: typ,
		CPUs: cpus, MemoryMiB: mem, Accel: m.Accel, RootDeviceType: im.RootDeviceType, RootDeviceName: im.RootDeviceName,
		Kernel: im.Kernel, Initrd: im.Initrd, Cmdline: im.Cmdline, Seed: len(req.UserData) > 0 || key.PublicKey != "", LaunchTime: time.Now().UTC(),
		Ports: ports, KeyName: key.Name, SSHUser: im.SSHUser, MetadataTokensRequired: req.MetadataTokens == api.MetadataTokensRequired,
		BootMode: mode, SecureBoot: mode == "uefi" && im.SecureBoot, TPM: mode == "uefi" && im.TPMSupport != "",
		Tags: req.Tags,
	})
	if err != nil {
		return nil, err
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if err := m.prepare(ctx, inst, im, req, key); err != nil {
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
func (m *Manager) prepare(ctx context.Context, inst *Instance, im *images.Image, req api.RunInstancesRequest, key Key) error {
	dir := m.layout.Dir(inst.rec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	mappings, err := m.Vols.MakeFor(ctx, inst.rec.OwnerID, inst.rec.ID, im, req.Mappings, req.Volumes)
	if err != nil {
		return err
	}
	if err := writeLaunch(dir, Launch{UserData: req.UserData, PublicKey: key.PublicKey}); err != nil {
		return err
	}
	if inst.rec.BootMode == "uefi" {
		if err := m.makeFirmwareFiles(dir, im, inst.rec.TPM); err != nil {
			return err
		}
	}
	if inst.rec.Seed {
		meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", inst.rec.ID, inst.rec.Name)
		if key.PublicKey != "" { // cloud-init gives it to the image's default user
			meta += fmt.Sprintf("public-keys:\n  - %q\n", key.PublicKey)
		}
		if err := builder.WriteSeed(filepath.Join(dir, "seed.iso"), req.UserData, []byte(meta)); err != nil {
			return err
		}
	}
	seedDevice := ""
	if inst.rec.Seed { // the guest sees the seed as the disk after the mapped ones
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
	return m.set(inst, func(r *record.Instance) { r.Mappings, r.SeedDevice = mappings, seedDevice })
}

// startMachine starts QEMU for the instance and makes it running. The caller holds
// inst.op.
func (m *Manager) startMachine(ctx context.Context, inst *Instance) error {
	m.Vols.DropCaptured(inst.rec.ID)
	m.clearPorts(inst)
	// An SSH port another process took while the instance was stopped (another kilnd's
	// instance, say) is given up for a new one: that port is kilnd's to choose, and kiln
	// ssh reads it from the record. A published port is the user's: its holder is named.
	sshTaken := inst.rec.SSHPort != 0 && machines.Free(record.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: inst.rec.SSHPort}) != nil
	if sshTaken {
		log.G(ctx).WithField("instance", inst.rec.ID).WithField("port", inst.rec.SSHPort).Info("the instance's SSH port is taken; choosing another")
	}
	// The QEMU user and the ports are chosen and checked under m.mu (set holds it), so
	// that instances starting at once get different users and never the same port.
	var slotErr, portErr error
	if err := m.set(inst, func(r *record.Instance) {
		if sshTaken {
			r.SSHPort = 0
		}
		if r.QEMUSlot != 0 && !m.specs.Users.Claim(r.QEMUSlot, m.Root) {
			r.QEMUSlot = 0 // another kilnd's instance has its user now: it gets another
		}
		if r.QEMUSlot == 0 {
			r.QEMUSlot, slotErr = machines.FreeSlot(m.slotsLocked(), func(slot uint32) bool { return m.specs.Users.Claim(slot, m.Root) })
		}
		portErr = m.portsLocked(r)
	}); err != nil {
		return err
	}
	if err := errors.Join(slotErr, portErr); err != nil {
		return err
	}
	m.SyncFirewall(context.WithoutCancel(ctx)) // a caller that went must not leave the instance without it
	// QEMU listens on them as it starts: one another process has is refused here, with
	// who has it.
	for _, p := range append([]record.Port{{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: inst.rec.SSHPort}}, inst.rec.Ports...) {
		if err := machines.Free(p); err != nil {
			return err
		}
	}
	var vols []*record.Volume
	for _, mp := range inst.rec.Mappings {
		if v := m.Vols.Get(mp.VolumeID); v != nil {
			vols = append(vols, v)
		}
	}
	// The console says where this boot begins (a line of kilnd's, written once the
	// request's checks passed; a QEMU that then fails to start leaves a line for a boot
	// that did not happen) and readiness counts from just past that line.
	boot := inst.rec.Boots + 1
	consoleStart, err := console.WriteBootLine(filepath.Join(m.layout.Dir(inst.rec.ID), hypervisor.ConsoleFile),
		console.BootLine(boot, time.Now(), inst.rec.ID, false))
	if err != nil {
		return fmt.Errorf("instance %s: %w", inst.rec.ID, err)
	}
	// Recorded before QEMU starts: a kilnd killed in between reattaches to it (the
	// record is pending) and counts its readiness from this boot's first line.
	if err := m.set(inst, func(r *record.Instance) { r.ConsoleStart, r.Boots = consoleStart, boot }); err != nil {
		return err
	}
	spec, closeFiles, err := m.specs.Spec(inst.rec, vols)
	if err != nil {
		return err
	}
	mach, err := hypervisor.Start(ctx, m.Qemu, spec)
	closeFiles()
	if err != nil {
		return err
	}
	inst.machine = mach
	m.mu.Lock()
	inst.guestOff = false
	m.mu.Unlock()
	m.watch(inst, mach)
	if err := m.Placer.Place(ctx, inst.rec.ID, mach.PID, inst.rec.CPUs, inst.rec.MemoryMiB); err != nil {
		log.G(ctx).WithError(err).WithField("instance", inst.rec.ID).Warn("instance runs outside a systemd scope")
	}
	return m.set(inst, func(r *record.Instance) {
		r.State, r.StateReason, r.PID, r.Accel, r.ConsoleStart = record.StateRunning, "", mach.PID, m.Accel, consoleStart
	})
}

// watch follows a machine until QEMU exits: a guest that shut itself down is noted, a
// guest that failed (a kernel panic, an accelerator's internal error) is stopped with
// the reason, and an exit nobody asked for makes the instance stopped (or,
// instance-store, terminated).
func (m *Manager) watch(inst *Instance, mach *hypervisor.Machine) {
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
					if m.OpsCtx.Err() == nil {
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
func (m *Manager) fail(inst *Instance, mach *hypervisor.Machine, reason string) {
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
func (m *Manager) gone(inst *Instance, reason string) {
	hypervisor.StopTPM(m.layout.Dir(inst.rec.ID))
	if inst.rec.RootDeviceType == "instance-store" {
		m.finishTerminate(inst, reason)
		return
	}
	if err := m.set(inst, func(r *record.Instance) { r.State, r.StateReason, r.PID = record.StateStopped, reason, 0 }); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record stopped instance")
	}
}

// discard removes what a failed launch made: machine, volumes, directory, record.
func (m *Manager) discard(inst *Instance) {
	if inst.machine != nil {
		inst.machine.Stop(context.Background(), 0)
		inst.machine = nil
	}
	m.Vols.DeleteOf(inst.rec.ID, true)
	os.RemoveAll(m.layout.Dir(inst.rec.ID))
	id := inst.rec.ID
	if err := m.DB.DeleteInstance(id); err != nil {
		log.L.WithError(err).WithField("instance", id).Error("remove the record of a failed launch")
	}
	m.mu.Lock()
	delete(m.all, id)
	m.mu.Unlock()
	m.releaseUser(inst.rec.QEMUSlot)
}

// releaseUser takes a QEMU user out of the firewall's set, then gives up this kilnd's
// claim on it (in that order: another kilnd may claim it at once).
func (m *Manager) releaseUser(slot uint32) {
	m.SyncFirewall(context.WithoutCancel(m.OpsCtx))
	if slot != 0 {
		m.specs.Users.Release(slot, m.Root)
	}
}

// Stop begins a stop: the state becomes stopping at once and the rest runs as an
// operation. force skips the guest's clean shutdown. Stopping a stopped instance does
// nothing.
func (m *Manager) Stop(inst *Instance, by string, force bool) error {
	if force && m.hurry(inst, record.StateStopping) {
		return nil // already, and now without the grace
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	switch {
	case inst.rec.RootDeviceType == "instance-store":
		return fmt.Errorf("instance %s has an instance-store root device and cannot be stopped; terminate it instead: %w",
			inst.rec.ID, errdefs.ErrNotImplemented)
	case inst.rec.State == record.StateStopped || inst.rec.State == record.StateStopping:
		return nil // already: stop is idempotent, as in the cloud
	case inst.rec.State != record.StateRunning:
		return fmt.Errorf("instance %s is %s; only a running instance can be stopped: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	if err := m.set(inst, func(r *record.Instance) { r.State, r.StateReason = record.StateStopping, "stopped by "+by }); err != nil {
		return err
	}
	m.finishStop(inst, force)
	return nil
}

// finishStop stops a stopping instance's QEMU as an operation and records it stopped.
func (m *Manager) finishStop(inst *Instance, force bool) {
	m.Ops.Go(func() {
		inst.op.Lock()
		defer inst.op.Unlock()
		note := m.halt(inst, force)
		if err := m.set(inst, func(r *record.Instance) {
			r.State, r.PID, r.StateReason = record.StateStopped, 0, withNote(r.StateReason, note)
		}); err != nil {
			log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record stopped instance")
		}
	})
}

// forcedOff is what a stop adds to its reason when the guest ignored the power button.
var forcedOff = fmt.Sprintf("forced off after %d s without a shutdown", int(stopGrace/time.Second))

// halt stops the instance's QEMU, if it runs: a shutdown asked of the guest's agent when
// it runs one, else the ACPI power button (hypervisor.Machine.Shutdown), up to stopGrace
// for the guest to power off (not with force), then the machine's Stop (QEMU's quit,
// SIGTERM, SIGKILL). While it waits for the guest the record says until when
// (ForceOffAt). A guest that fails meanwhile (a panic: it will never power off) ends
// the wait at once. halt returns what a stop's reason should add: forcedOff, the
// guest's failure, or "" for a clean shutdown or a stop that was forced from the start.
// The caller holds inst.op.
func (m *Manager) halt(inst *Instance, force bool) (note string) {
	defer inst.hurried.Store(false) // a forced request that came meanwhile is answered
	mach := inst.machine
	if mach == nil {
		return ""
	}
	inst.machine = nil // the watcher leaves it to us
	l := log.L.WithField("instance", inst.rec.ID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.OpsCtx), stopGrace+time.Minute)
	defer cancel()
	switch {
	case force:
	case mach.Failure() != "":
		note = mach.Failure()
	default:
		how, err := mach.Shutdown(ctx)
		if err != nil {
			l.WithError(err).Warn("power button; forcing the instance off")
			note = "forced off: QEMU did not take the power button"
			break
		}
		l.WithField("how", how).Info("asked the guest to shut down")
		deadline := time.Now().Add(stopGrace)
		if err := m.set(inst, func(r *record.Instance) { r.ForceOffAt = deadline.UTC() }); err != nil {
			l.WithError(err).Error("record when the instance is forced off")
		}
		t := time.NewTimer(stopGrace)
		hurry := time.NewTicker(250 * time.Millisecond)
	wait:
		for {
			select {
			case <-mach.Exited():
			case <-mach.Failed():
				note = mach.Failure()
			case <-t.C:
				note = forcedOff
				l.WithField("how", how).Warn("the guest did not shut down; forcing it off")
			case <-hurry.C:
				if !inst.hurried.Load() {
					continue
				}
				note = "forced off when asked (--force)"
				l.Info("forced off when asked")
			case <-ctx.Done():
			}
			break wait
		}
		t.Stop()
		hurry.Stop()
		if err := m.set(inst, func(r *record.Instance) { r.ForceOffAt = time.Time{} }); err != nil {
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

// Start starts a stopped instance again, with its volumes as they were. Starting a
// running one does nothing (kiln-instance@.service relies on both).
func (m *Manager) Start(ctx context.Context, inst *Instance) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	switch inst.rec.State {
	case record.StateRunning, record.StatePending:
		return nil // already: start is idempotent, as in the cloud
	case record.StateStopped:
	default:
		return fmt.Errorf("instance %s is %s; only a stopped instance can be started: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	m.mu.Lock()
	err := m.admitLocked(m.Quota(inst.rec.OwnerID), inst.rec.OwnerID, 1, inst.rec.CPUs, inst.rec.MemoryMiB)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := m.set(inst, func(r *record.Instance) { r.State, r.StateReason = record.StatePending, "" }); err != nil {
		return err
	}
	if err := m.startMachine(ctx, inst); err != nil {
		m.update(inst, "stopped after a failed start", func(r *record.Instance) { r.State, r.StateReason = record.StateStopped, "start failed: "+err.Error() })
		return err
	}
	return nil
}

// Exec runs a program in a running instance's guest through its agent
// (hypervisor.Machine.Exec). It holds no lock while the program runs: a stop goes on
// meanwhile, and ends the exec with ErrUnavailable.
func (m *Manager) Exec(ctx context.Context, inst *Instance, req hypervisor.ExecRequest) (hypervisor.ExecResult, error) {
	inst.op.Lock()
	mach, id, state := inst.machine, inst.rec.ID, inst.rec.State
	inst.op.Unlock()
	if state != record.StateRunning || mach == nil {
		return hypervisor.ExecResult{}, fmt.Errorf("instance %s is %s; exec needs a running instance: %w", id, state, errdefs.ErrFailedPrecondition)
	}
	res, err := mach.Exec(ctx, req)
	if err != nil {
		return res, fmt.Errorf("instance %s: %w", id, err)
	}
	return res, nil
}

// DialConsole connects to a running instance's serial console (hypervisor.DialConsole):
// one connection at a time (errdefs.ErrConflict for a second), only while it runs
// (errdefs.ErrFailedPrecondition otherwise). The caller closes it; it reads EOF once
// QEMU exits.
func (m *Manager) DialConsole(ctx context.Context, inst *Instance) (net.Conn, error) {
	// A stop may hold the instance for its whole grace: an attach waits a little, then
	// says so, rather than hanging on it.
	for wait := time.NewTimer(2 * time.Second); !inst.op.TryLock(); {
		select {
		case <-wait.C:
			rec := m.Record(inst)
			return nil, fmt.Errorf("instance %s is %s and busy with a lifecycle operation; attach once it runs: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
		case <-ctx.Done():
			wait.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	mach, id, state := inst.machine, inst.rec.ID, inst.rec.State
	inst.op.Unlock()
	if state != record.StateRunning || mach == nil {
		return nil, fmt.Errorf("instance %s is %s; its console can be attached only while it runs (kiln start %s): %w", id, state, id, errdefs.ErrFailedPrecondition)
	}
	c, err := mach.DialConsole(ctx)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", id, err)
	}
	return c, nil
}

// rebootWait bounds a reboot: the reset command and QEMU carrying it out.
const rebootWait = time.Minute

// Reboot resets a running instance (the machine's reset button).
func (m *Manager) Reboot(inst *Instance) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.State != record.StateRunning || inst.machine == nil {
		return fmt.Errorf("instance %s is %s; only a running instance can be rebooted: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(m.OpsCtx, rebootWait)
	defer cancel()
	if err := inst.machine.Reboot(ctx); err != nil {
		return fmt.Errorf("instance %s: reboot: %w", inst.rec.ID, err)
	}
	// Ready means ready since this reset: what the guest printed before no longer counts.
	// The console's reboot line and the size are taken once QEMU has carried out the
	// reset (Reboot waits for it), before the new boot's kernel has printed anything
	// (the firmware prints nothing on the serial port with a direct kernel boot). A
	// reset the guest asks for itself is not marked (docs/decisions.md).
	path := filepath.Join(m.layout.Dir(inst.rec.ID), hypervisor.ConsoleFile)
	start, err := console.WriteBootLine(path, console.BootLine(max(inst.rec.Boots, 1), time.Now(), inst.rec.ID, true))
	if err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Warn("mark the reboot on the console")
		if st, err := os.Stat(path); err == nil {
			start = st.Size()
		}
	}
	if err := m.set(inst, func(r *record.Instance) { r.ConsoleStart = start }); err != nil {
		return err
	}
	log.L.WithField("instance", inst.rec.ID).Info("instance rebooted")
	return nil
}

// Terminate begins a termination: shutting-down at once, then (as an operation) the
// machine stops and the volumes deleted on termination go.
func (m *Manager) Terminate(inst *Instance, by string, force bool) error {
	if force && m.hurry(inst, record.StateShuttingDown) {
		return nil // already, and now without the grace
	}
	if force {
		m.hurry(inst, record.StateStopping) // then it is terminated, below
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.rec.State == record.StateTerminated || inst.rec.State == record.StateShuttingDown {
		return nil // already: terminate is idempotent, as in the cloud
	}
	if err := m.set(inst, func(r *record.Instance) { r.State, r.StateReason = record.StateShuttingDown, "terminated by "+by }); err != nil {
		return err
	}
	m.haltAndTerminate(inst, force)
	return nil
}

// hurry cuts short the grace of an instance in state (stopping or shutting down: a
// forced request meets a graceful one under way), without waiting for that operation,
// and reports whether it was in it.
func (m *Manager) hurry(inst *Instance, state string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst.rec.State != state {
		return false
	}
	inst.hurried.Store(true)
	return true
}

// haltAndTerminate stops a shutting-down instance's QEMU as an operation and finishes
// its termination.
func (m *Manager) haltAndTerminate(inst *Instance, force bool) {
	m.Ops.Go(func() {
		inst.op.Lock()
		defer inst.op.Unlock()
		note := m.halt(inst, force)
		m.finishTerminate(inst, withNote(inst.rec.StateReason, note))
	})
}

// clearPorts forgets the hot-plug ports of the instance's volumes: a new QEMU puts every
// volume on its root bus. The caller holds inst.op and no machine runs.
func (m *Manager) clearPorts(inst *Instance) {
	for _, v := range m.Vols.Select(func(v *record.Volume) bool { return v.InstanceID == inst.rec.ID && v.Port != "" }) {
		v.Port = ""
		if err := m.Vols.Put(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Error("record that a volume left its hot-plug port")
		}
	}
}

// finishTerminate deletes what a terminated instance leaves (its volumes deleted on
// termination, its seed), detaches the standalone volumes it had, and records it
// terminated. The caller holds inst.op.
func (m *Manager) finishTerminate(inst *Instance, reason string) {
	m.Vols.DeleteOf(inst.rec.ID, false)
	for _, v := range m.Vols.Select(func(v *record.Volume) bool { return v.InstanceID == inst.rec.ID && v.Standalone }) {
		if err := m.unplug(inst, v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Error("detach volume of terminated instance")
		}
	}
	os.Remove(filepath.Join(m.layout.Dir(inst.rec.ID), "seed.iso"))
	removeFirmwareFiles(m.layout.Dir(inst.rec.ID))
	if err := m.set(inst, func(r *record.Instance) {
		r.State, r.StateReason, r.PID, r.TerminatedAt = record.StateTerminated, reason, 0, time.Now().UTC()
	}); err != nil {
		log.L.WithError(err).WithField("instance", inst.rec.ID).Error("record terminated instance")
	}
	m.releaseUser(inst.rec.QEMUSlot)
}

// Reconcile runs at start, before kilnd serves: it reattaches to each QEMU that still
// runs, and records the vanished ones as stopped (volume-backed) or terminated
// (instance-store), with a reason. One instance's failure never stops the others.
func (m *Manager) Reconcile(ctx context.Context) {
	m.mu.Lock()
	var todo []*Instance
	for _, inst := range m.all {
		switch inst.rec.State {
		case record.StatePending, record.StateRunning, record.StateStopping, record.StateShuttingDown:
			todo = append(todo, inst)
		}
	}
	m.mu.Unlock()
	for _, inst := range todo {
		l := log.G(ctx).WithField("instance", inst.rec.ID)
		inst.op.Lock()
		mach, err := hypervisor.Attach(ctx, m.layout.Dir(inst.rec.ID))
		if err == nil {
			inst.machine = mach
			m.watch(inst, mach)
			l.WithField("pid", mach.PID).Info("reattached to running instance")
		}
		switch st := inst.rec.State; {
		case err != nil && st == record.StateShuttingDown:
			m.finishTerminate(inst, inst.rec.StateReason)
		case err != nil:
			l.WithError(err).Warn("instance's QEMU is gone")
			m.gone(inst, "QEMU was gone when kilnd started: "+err.Error())
		case st == record.StateStopping: // a stop was under way when kilnd stopped: finish it
			m.finishStop(inst, false)
		case st == record.StateShuttingDown:
			m.haltAndTerminate(inst, false)
		case st == record.StatePending:
			m.update(inst, "running after a reattach", func(r *record.Instance) { r.State, r.PID = record.StateRunning, mach.PID })
		}
		inst.op.Unlock()
	}
}
