package instances

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/machines"
	"kiln/daemon/record"
	"kiln/daemon/vols"
)

// Attach attaches the volume id (a standalone one, attached to nothing) to the
// instance as device (or the first free one): hot-plugged when the instance runs, at its
// next start when it is stopped.
func (m *Manager) Attach(ctx context.Context, inst *Instance, id, device string) (api.Volume, error) {
	if err := m.attach(ctx, inst, id, device); err != nil {
		return api.Volume{}, err
	}
	return m.Vols.Inspect(id, func(string) bool { return true })
}

func (m *Manager) attach(ctx context.Context, inst *Instance, id, device string) error {
	inst.op.Lock()
	defer inst.op.Unlock()
	v, release, err := m.Vols.Claim(id, func(v *record.Volume) error {
		if !v.Standalone {
			return fmt.Errorf("volume %s belongs to instance %s: %w", v.ID, v.InstanceID, errdefs.ErrFailedPrecondition)
		}
		return vols.NotAttached(v)
	})
	if err != nil {
		return err
	}
	defer release()
	if inst.rec.State != record.StateRunning && inst.rec.State != record.StateStopped {
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
		port, err := m.Vols.FreePort(inst.rec.ID)
		if err != nil {
			return err
		}
		disk, err := machines.OpenDisk(filepath.Base(device), m.specs.ChainFiles(v))
		if err != nil {
			return err
		}
		err = inst.machine.AttachDisk(ctx, disk, port)
		for _, f := range disk.Files {
			f.Close()
		}
		if err != nil {
			return err
		}
		v.Port = port
	}
	v.InstanceID, v.DeviceName = inst.rec.ID, device
	if err := m.Vols.Put(v); err != nil {
		return err
	}
	return m.set(inst, func(r *record.Instance) {
		r.Mappings = append(r.Mappings, record.Mapping{DeviceName: device, VolumeID: v.ID})
	})
}

// Detach detaches the standalone volume id, one the caller may see, from its instance.
func (m *Manager) Detach(ctx context.Context, id string, visible func(owner string) bool) (api.Volume, error) {
	if _, err := m.Vols.Inspect(id, visible); err != nil {
		return api.Volume{}, err
	}
	if err := m.detach(ctx, id); err != nil {
		return api.Volume{}, err
	}
	return m.Vols.Inspect(id, visible)
}

func (m *Manager) detach(ctx context.Context, id string) error {
	v, release, err := m.Vols.Claim(id, func(*record.Volume) error { return nil })
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
func (m *Manager) unplug(inst *Instance, v *record.Volume) error {
	c := *v
	c.InstanceID, c.DeviceName, c.Port = "", "", ""
	if err := m.Vols.Put(&c); err != nil {
		return err
	}
	return m.set(inst, func(r *record.Instance) {
		var keep []record.Mapping
		for _, mp := range r.Mappings {
			if mp.VolumeID != v.ID {
				keep = append(keep, mp)
			}
		}
		r.Mappings = keep
	})
}
