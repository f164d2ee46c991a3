package instances

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/quota"
	"kiln/daemon/record"
	"kiln/hypervisor"
	"kiln/images"
)

// CreateImage makes an image of the instance's volumes. By default, as the cloud does,
// a running instance is stopped cleanly, captured and started again; a stopped one is
// captured as it is. With NoReboot a running instance is captured live: the machine
// puts a new top on every disk at one instant (crash-consistent across disks), and
// the files below, which no longer change, are captured while the guest runs on. The
// instance is held for the whole operation.
func (m *Manager) CreateImage(ctx context.Context, inst *Instance, owner string, req api.CreateImageRequest) (*images.Image, error) {
	inst.op.Lock()
	rec := inst.rec
	live := req.NoReboot
	switch {
	case live && (rec.State != record.StateRunning || inst.machine == nil):
		inst.op.Unlock()
		return nil, fmt.Errorf("instance %s is %s; a live capture (--no-reboot) needs a running instance: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	case rec.State != record.StateRunning && rec.State != record.StateStopped:
		inst.op.Unlock()
		return nil, fmt.Errorf("instance %s is %s; an image can be made of a running or stopped instance: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	source := &images.Image{ID: rec.ImageID, Config: images.Config{Architecture: "x86_64", BootMode: "legacy-bios",
		RootDeviceName: rec.RootDeviceName, RootDeviceType: rec.RootDeviceType, Kernel: rec.Kernel, Initrd: rec.Initrd, Cmdline: rec.Cmdline}}
	if rec.BootMode != "" {
		source.BootMode = rec.BootMode
	}
	if rec.TPM {
		source.TPMSupport = images.TPMSupportV2
	}
	source.SecureBoot = rec.SecureBoot
	if orig, err := m.Store.Image(rec.ImageID); err == nil {
		source.Architecture, source.BootMode, source.SSHUser = orig.Architecture, orig.BootMode, orig.SSHUser
		source.SecureBoot, source.TPMSupport, source.UEFIData = orig.SecureBoot, orig.TPMSupport, orig.UEFIData
	}
	uefiVars := "" // EC2's UEFI data: the new image starts its instances from this one's variables
	if rec.BootMode == "uefi" {
		uefiVars = filepath.Join(m.layout.Dir(rec.ID), hypervisor.VarsFile)
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	var vols []*record.Volume
	var capVols []builder.CaptureVolume
	var estimate int64 // of the new layers: what the files to capture take on disk
	for _, mp := range rec.Mappings {
		c := m.Vols.Get(mp.VolumeID)
		if c == nil {
			continue
		}
		files := m.layout.Pending(c)
		for _, f := range files {
			if st, err := os.Stat(f); err == nil {
				estimate += quota.Allocated(st)
			}
		}
		if live { // the top is frozen under a new one first, and captured as a file of its own
			files[len(files)-1] = filepath.Join(m.layout.VolumeDir(c), c.ID+".frozen-"+stamp+".qcow2")
		}
		vols = append(vols, c)
		capVols = append(capVols, builder.CaptureVolume{DeviceName: c.DeviceName, Files: files, Chain: c.Chain,
			SizeGiB: c.SizeGiB, DeleteOnTermination: mp.DeleteOnTermination})
	}
	stored, err := m.Imaging.AdmitStored(owner, estimate)
	if err != nil {
		inst.op.Unlock()
		return nil, err
	}
	capture, err := m.Builder.PrepareCapture(builder.CaptureRequest{Name: req.Name, OwnerID: owner, Description: req.Description,
		Tags: req.Tags, SourceInstanceID: rec.ID, Source: source, Volumes: capVols, UEFIVars: uefiVars, SnapshotTags: req.SnapshotTags})
	if err != nil {
		stored()
		inst.op.Unlock()
		return nil, err
	}
	end := m.Imaging.Track(capture.Image.ID, rec.ID, capture.Progress) // until the operation ends, instance waits see it
	m.Ops.Go(func() {
		defer func() {
			inst.op.Unlock()
			end()
			stored()
		}()
		opCtx := log.WithLogger(m.OpsCtx, log.G(ctx))
		if live {
			if err := m.freeze(opCtx, inst, vols, stamp); err != nil {
				m.Store.UpdateImage(capture.Image.ID, func(im *images.Image) error {
					im.State, im.StateReason = images.StateFailed, "live snapshot: "+err.Error()
					return nil
				})
				return
			}
			if _, err := capture.Run(opCtx); err == nil {
				m.Vols.MarkCaptured(vols, capVols, capture.Captured, true)
			}
			return
		}
		wasRunning := rec.State == record.StateRunning
		if wasRunning {
			m.update(inst, "stopping to create an image", func(r *record.Instance) {
				r.State, r.StateReason = record.StateStopping, "stopping to create image "+capture.Image.ID
			})
			note := m.halt(inst, false) // forced off: the capture is crash-consistent only
			m.update(inst, "stopped to create an image", func(r *record.Instance) {
				r.State, r.PID, r.StateReason = record.StateStopped, 0, withNote(r.StateReason, note)
			})
		}
		if _, err := capture.Run(opCtx); err == nil {
			// The frozen files are in the store now; the top goes on changing.
			m.Vols.MarkCaptured(vols, capVols, capture.Captured, false)
		}
		if wasRunning {
			m.update(inst, "starting after an image was created", func(r *record.Instance) { r.State, r.StateReason = record.StatePending, "" })
			if err := m.startMachine(opCtx, inst); err != nil {
				m.update(inst, "stopped after a failed start", func(r *record.Instance) {
					r.State, r.StateReason = record.StateStopped, "start after creating an image failed: "+err.Error()
				})
			}
		}
	})
	return capture.Image, nil
}

// freeze puts a new top on each volume of a running instance at one instant (the
// machine's Snapshot). The intent is recorded first, so a crash at any point leaves a
// volume record whose files, in order, still hold the disk. The caller holds inst.op.
func (m *Manager) freeze(ctx context.Context, inst *Instance, vols []*record.Volume, stamp string) error {
	mach := inst.machine
	var overlays []hypervisor.Overlay
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	for _, v := range vols {
		name := v.ID + ".frozen-" + stamp + ".qcow2"
		frozen, top := filepath.Join(m.layout.VolumeDir(v), name), m.layout.VolumePath(v)
		before := *v
		v.Frozen = append(v.Frozen, record.Frozen{Name: name})
		if err := m.Vols.Put(v); err != nil { // the intent, before any file moves
			rollback()
			return err
		}
		undo = append(undo, func() {
			if err := m.Vols.Put(&before); err != nil {
				log.G(ctx).WithError(err).WithField("volume", v.ID).Error("record the volume as it was before a failed live snapshot")
			}
		})
		if err := os.Rename(top, frozen); err != nil { // QEMU keeps writing through its open file
			rollback()
			return err
		}
		undo = append(undo, func() { os.Rename(frozen, top) })
		if err := m.tool.CreateOverlayNamed(ctx, top, name, v.SizeGiB<<30); err != nil {
			rollback()
			return err
		}
		undo = append(undo, func() { os.Remove(top) })
		f, err := os.OpenFile(top, os.O_RDWR, 0)
		if err != nil {
			rollback()
			return err
		}
		undo = append(undo, func() { f.Close() })
		overlays = append(overlays, hypervisor.Overlay{DiskID: filepath.Base(v.DeviceName), File: f})
	}
	err := mach.Snapshot(ctx, overlays)
	for _, o := range overlays {
		o.File.Close()
	}
	if err != nil {
		rollback()
		return err
	}
	log.G(ctx).WithField("instance", inst.rec.ID).Info("volumes frozen under new tops (live snapshot)")
	return nil
}
