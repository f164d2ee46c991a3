package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"

	"kiln/daemon/api"
	"kiln/hypervisor"
	"kiln/images"
)

func (m *instances) toAPIVolume(v *volumeRecord) api.Volume {
	out := api.Volume{ID: v.ID, OwnerID: v.OwnerID, State: "available", SizeGiB: v.SizeGiB, SnapshotID: v.SnapshotID,
		InstanceID: v.InstanceID, DeviceName: v.DeviceName, DeleteOnTermination: v.DeleteOnTermination, CreateTime: v.CreateTime}
	if v.InstanceID != "" {
		out.State = "in-use"
	}
	return out
}

// volume finds a volume the caller may see.
func (m *instances) volume(id string, visible func(string) bool) (*volumeRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.vols[id]
	if v == nil || !visible(v.OwnerID) {
		return nil, fmt.Errorf("volume %q: see kiln volume ls: %w", id, errdefs.ErrNotFound)
	}
	c := *v
	return &c, nil
}

func (s *server) listVolumes(w http.ResponseWriter, r *http.Request, c Caller) error {
	out := []api.Volume{}
	s.inst.mu.Lock()
	for _, v := range s.inst.vols {
		if s.viewer(c)(v.OwnerID) {
			out = append(out, s.inst.toAPIVolume(v))
		}
	}
	s.inst.mu.Unlock()
	sortVolumes(out)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func sortVolumes(vs []api.Volume) {
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && vs[j].ID < vs[j-1].ID; j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
}

func (s *server) inspectVolume(w http.ResponseWriter, r *http.Request, c Caller) error {
	v, err := s.inst.volume(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.inst.toAPIVolume(v))
	return nil
}

// createVolume answers POST /v1/volumes: a standalone volume, blank or over a snapshot.
func (s *server) createVolume(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.CreateVolumeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	m := s.inst
	v := &volumeRecord{ID: images.NewID(volumePrefix), OwnerID: c.User, Standalone: true, SizeGiB: req.SizeGiB, CreateTime: time.Now().UTC()}
	release := m.store.Hold()
	defer release()
	var chain []digest.Digest
	if req.SnapshotID != "" {
		sn, err := s.store.Snapshot(req.SnapshotID)
		if err != nil || !s.viewer(c)(sn.OwnerID) {
			return api.FromError(fmt.Errorf("snapshot %q: %w", req.SnapshotID, errdefs.ErrNotFound), api.KindSnapshot)
		}
		if v.SizeGiB == 0 {
			v.SizeGiB = sn.VolumeSize
		}
		if v.SizeGiB < sn.VolumeSize {
			return fmt.Errorf("size %d GiB is less than snapshot %s (%d GiB): %w", v.SizeGiB, sn.ID, sn.VolumeSize, errdefs.ErrInvalidArgument)
		}
		v.SnapshotID, v.Chain = sn.ID, sn.Chain
		chain = sn.Chain
	}
	if v.SizeGiB < 1 || v.SizeGiB > 16384 {
		return fmt.Errorf("size %d GiB: give 1 to 16384 (--size 10G): %w", v.SizeGiB, errdefs.ErrInvalidArgument)
	}
	// The quota is checked, and the volume reserved, before any file is made.
	reserved, err := m.admitVolumes(m.quota(c.User), c.User, 1, v.SizeGiB)
	if err != nil {
		return err
	}
	defer reserved()
	if err := os.MkdirAll(m.volumeDir(v), 0o700); err != nil {
		return err
	}
	if len(chain) > 0 {
		err = m.tool.CreateOverlay(r.Context(), m.volumePath(v), m.store.BlobPath(chain[len(chain)-1]), v.SizeGiB<<30)
	} else {
		err = m.tool.CreateBlank(r.Context(), m.volumePath(v), v.SizeGiB<<30)
	}
	if err != nil {
		return err
	}
	if err := m.putVolume(v); err != nil {
		os.Remove(m.volumePath(v))
		return err
	}
	log.G(r.Context()).WithField("volume", v.ID).WithField("uid", c.UID).Info("volume created")
	noteCreated(r.Context(), "volume", v.ID)
	writeJSON(w, http.StatusCreated, m.toAPIVolume(v))
	return nil
}

func (s *server) deleteVolume(w http.ResponseWriter, r *http.Request, c Caller) error {
	v, err := s.inst.volume(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	v, release, err := s.inst.claimVolume(v.ID, notAttached)
	if err != nil {
		return err
	}
	defer release()
	if err := s.inst.deleteVolume(v); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// attachVolume answers POST /v1/volumes/{volume}/attach: a running instance gets it
// hot-plugged (the guest sees a new disk), a stopped one at its next start.
func (s *server) attachVolume(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.AttachVolumeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	v, err := s.inst.volume(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	inst, err := s.inst.get(req.Instance, s.viewer(c))
	if err != nil {
		return api.FromError(err, api.KindInstance)
	}
	if err := s.inst.attach(r.Context(), inst, v, req.DeviceName); err != nil {
		return err
	}
	v, _ = s.inst.volume(v.ID, s.viewer(c))
	writeJSON(w, http.StatusOK, s.inst.toAPIVolume(v))
	return nil
}

func (s *server) detachVolume(w http.ResponseWriter, r *http.Request, c Caller) error {
	v, err := s.inst.volume(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	if err := s.inst.detach(r.Context(), v); err != nil {
		return err
	}
	v, _ = s.inst.volume(v.ID, s.viewer(c))
	writeJSON(w, http.StatusOK, s.inst.toAPIVolume(v))
	return nil
}

// claimVolume marks a volume as being worked on, after ready accepts its current
// record, and returns a copy of that record: of two requests on one volume at once (two
// attaches, an attach and a delete) the second is refused with VolumeInUse instead of
// acting on a record the first is changing. release ends the claim; it may be called
// more than once.
func (m *instances) claimVolume(id string, ready func(*volumeRecord) error) (*volumeRecord, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.vols[id]
	switch {
	case cur == nil:
		return nil, nil, fmt.Errorf("volume %q: see kiln volume ls: %w", id, errdefs.ErrNotFound)
	case m.volsBusy[id]:
		return nil, nil, fmt.Errorf("volume %s is being attached, detached or deleted by another request; try again when it is done: %w", id, errdefs.ErrConflict)
	}
	if err := ready(cur); err != nil {
		return nil, nil, err
	}
	if m.volsBusy == nil {
		m.volsBusy = map[string]bool{}
	}
	m.volsBusy[id] = true
	c := *cur
	c.Frozen = append([]frozenFile(nil), cur.Frozen...)
	var once sync.Once
	return &c, func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.volsBusy, id)
			m.mu.Unlock()
		})
	}, nil
}

// notAttached accepts a volume attached to no instance (for claimVolume).
func notAttached(v *volumeRecord) error {
	if v.InstanceID != "" {
		return fmt.Errorf("volume %s is attached to %s as %s; detach it first: %w", v.ID, v.InstanceID, v.DeviceName, errdefs.ErrConflict)
	}
	return nil
}

func (m *instances) attach(ctx context.Context, inst *instance, v *volumeRecord, device string) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	if !v.Standalone {
		return fmt.Errorf("volume %s belongs to instance %s: %w", v.ID, v.InstanceID, errdefs.ErrFailedPrecondition)
	}
	v, release, err := m.claimVolume(v.ID, notAttached)
	if err != nil {
		return err
	}
	defer release()
	if inst.rec.State != stateRunning && inst.rec.State != stateStopped {
		return fmt.Errorf("instance %s is %s; attach to a running or stopped instance: %w", inst.rec.ID, inst.rec.State, errdefs.ErrFailedPrecondition)
	}
	used := map[string]bool{inst.rec.SeedDevice: inst.rec.SeedDevice != ""}
	for _, mp := range inst.rec.Mappings {
		used[mp.DeviceName] = true
	}
	if device == "" {
		for l := 'b'; l <= 'z' && device == ""; l++ {
			if d := "/dev/vd" + string(l); !used[d] {
				device = d
			}
		}
	}
	switch {
	case !volumeDevice.MatchString(device):
		return fmt.Errorf("device %q: want /dev/vdb to /dev/vdz: %w", device, errdefs.ErrInvalidArgument)
	case used[device]:
		return fmt.Errorf("device %s of instance %s is taken: %w", device, inst.rec.ID, errdefs.ErrInvalidArgument)
	}
	if inst.machine != nil {
		port, err := m.freePort(inst)
		if err != nil {
			return err
		}
		disk, err := openDisk(filepath.Base(device), m.chainFiles(v))
		if err != nil {
			return err
		}
		err = inst.machine.AttachDisk(ctx, disk, port)
		closeFiles(disk.Files)
		if err != nil {
			return err
		}
		v.Port = port
	}
	v.InstanceID, v.DeviceName = inst.rec.ID, device
	if err := m.putVolume(v); err != nil {
		return err
	}
	return m.set(inst, func(r *instanceRecord) {
		r.Mappings = append(r.Mappings, instanceMapping{DeviceName: device, VolumeID: v.ID})
	})
}

// freePort is a hot-plug port no attached volume of the instance uses.
func (m *instances) freePort(inst *instance) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := map[string]bool{}
	for _, v := range m.vols {
		if v.InstanceID == inst.rec.ID && v.Port != "" {
			taken[v.Port] = true
		}
	}
	for i := 0; i < hypervisor.HotplugPorts; i++ {
		if p := hypervisor.HotplugPort(i); !taken[p] {
			return p, nil
		}
	}
	return "", fmt.Errorf("instance %s has %d volumes attached while running; stop it to attach more: %w", inst.rec.ID, hypervisor.HotplugPorts, errdefs.ErrResourceExhausted)
}

func (m *instances) detach(ctx context.Context, v *volumeRecord) error {
	v, release, err := m.claimVolume(v.ID, func(*volumeRecord) error { return nil })
	if err != nil {
		return err
	}
	defer release()
	if v.InstanceID == "" {
		return fmt.Errorf("volume %s is not attached: %w", v.ID, errdefs.ErrFailedPrecondition)
	}
	if !v.Standalone {
		return fmt.Errorf("volume %s came with instance %s and goes with it: %w", v.ID, v.InstanceID, errdefs.ErrFailedPrecondition)
	}
	m.mu.Lock()
	inst := m.all[v.InstanceID]
	m.mu.Unlock()
	if inst == nil {
		return fmt.Errorf("instance %s: %w", v.InstanceID, errdefs.ErrNotFound)
	}
	inst.op.Lock()
	defer inst.op.Unlock()
	if inst.machine != nil {
		if err := inst.machine.DetachDisk(ctx, filepath.Base(v.DeviceName)); err != nil {
			return err
		}
	}
	return m.unplug(inst, v)
}

// unplug records a standalone volume as detached. The caller holds inst.op.
func (m *instances) unplug(inst *instance, v *volumeRecord) error {
	c := *v
	c.InstanceID, c.DeviceName, c.Port = "", "", ""
	if err := m.putVolume(&c); err != nil {
		return err
	}
	return m.set(inst, func(r *instanceRecord) {
		var keep []instanceMapping
		for _, mp := range r.Mappings {
			if mp.VolumeID != v.ID {
				keep = append(keep, mp)
			}
		}
		r.Mappings = keep
	})
}
