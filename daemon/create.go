package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/hypervisor"
	"kiln/images"
)

// createImage answers POST /v1/instances/{instance}/create-image: the new image,
// pending; the capture runs as an operation.
func (s *server) createImage(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.CreateImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	// Another's instance is not found: only its owner (or an administrator) captures it.
	inst, err := s.inst.get(r.PathValue("instance"), s.viewer(c))
	if err != nil {
		return api.FromError(err, api.KindInstance)
	}
	release, err := s.admitImage(c.User)
	if err != nil {
		return err
	}
	defer release() // the pending record counts once createImage returns
	im, err := s.inst.createImage(r.Context(), s, inst, c.User, req)
	if err != nil {
		return err
	}
	noteCreated(r.Context(), "image", im.ID)
	writeJSON(w, http.StatusAccepted, s.imageView(c, im))
	return nil
}

// copyImage answers POST /v1/images/{image}/copy: a new record over the same content.
func (s *server) copyImage(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.CopyImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	src, err := s.lookupImage(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return err
	}
	release, err := s.admitImage(c.User)
	if err != nil {
		return err
	}
	defer release()
	im, err := s.store.CopyImage(src.ID, req.Name, c.User, req.Description, req.CopyTags, time.Now().UTC())
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Infof("image copied from %s", src.ID)
	noteCreated(r.Context(), "image", im.ID)
	writeJSON(w, http.StatusCreated, s.imageView(c, im))
	return nil
}

// createImage makes an image of the instance's volumes. By default, as the cloud does,
// a running instance is stopped cleanly, captured and started again; a stopped one is
// captured as it is. With NoReboot a running instance is captured live: the machine
// puts a new top on every disk at one instant (crash-consistent across disks), and
// the files below, which no longer change, are captured while the guest runs on. The
// instance is held for the whole operation.
func (m *instances) createImage(ctx context.Context, s *server, inst *instance, owner string, req api.CreateImageRequest) (*images.Image, error) {
	inst.op.Lock()
	rec := inst.rec
	live := req.NoReboot
	switch {
	case live && (rec.State != stateRunning || inst.machine == nil):
		inst.op.Unlock()
		return nil, fmt.Errorf("instance %s is %s; a live capture (--no-reboot) needs a running instance: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	case rec.State != stateRunning && rec.State != stateStopped:
		inst.op.Unlock()
		return nil, fmt.Errorf("instance %s is %s; an image can be made of a running or stopped instance: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	source := &images.Image{ID: rec.ImageID, Config: images.Config{Architecture: "x86_64", BootMode: "legacy-bios",
		RootDeviceName: rec.RootDeviceName, RootDeviceType: rec.RootDeviceType, Kernel: rec.Kernel, Initrd: rec.Initrd, Cmdline: rec.Cmdline}}
	if orig, err := m.store.Image(rec.ImageID); err == nil {
		source.Architecture, source.BootMode = orig.Architecture, orig.BootMode
	}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	var vols []*volumeRecord
	var capVols []builder.CaptureVolume
	var estimate int64 // of the new layers: what the files to capture take on disk
	m.mu.Lock()
	for _, mp := range rec.Mappings {
		v := m.vols[mp.VolumeID]
		if v == nil {
			continue
		}
		c := *v
		c.Frozen = append([]frozenFile(nil), v.Frozen...)
		files := m.pending(&c)
		for _, f := range files {
			if st, err := os.Stat(f); err == nil {
				estimate += allocated(st)
			}
		}
		if live { // the top is frozen under a new one first, and captured as a file of its own
			files[len(files)-1] = filepath.Join(m.volumeDir(&c), c.ID+".frozen-"+stamp+".qcow2")
		}
		vols = append(vols, &c)
		capVols = append(capVols, builder.CaptureVolume{DeviceName: c.DeviceName, Files: files, Chain: c.Chain,
			SizeGiB: c.SizeGiB, DeleteOnTermination: mp.DeleteOnTermination})
	}
	m.mu.Unlock()
	stored, err := s.admitStored(owner, estimate)
	if err != nil {
		inst.op.Unlock()
		return nil, err
	}
	capture, err := s.builder.PrepareCapture(builder.CaptureRequest{Name: req.Name, OwnerID: owner, Description: req.Description,
		Tags: req.Tags, SourceInstanceID: rec.ID, Source: source, Volumes: capVols})
	if err != nil {
		stored()
		inst.op.Unlock()
		return nil, err
	}
	end := s.track(capture.Image.ID, capture.Progress)
	s.mu.Lock()
	s.running[capture.Image.ID].instance = rec.ID // until the operation ends, instance waits see it
	s.mu.Unlock()
	m.ops.Go(func() {
		defer func() {
			inst.op.Unlock()
			end()
			stored()
		}()
		opCtx := log.WithLogger(m.opsCtx, log.G(ctx))
		if live {
			if err := m.freeze(opCtx, inst, vols, stamp); err != nil {
				m.store.UpdateImage(capture.Image.ID, func(im *images.Image) error {
					im.State, im.StateReason = images.StateFailed, "live snapshot: "+err.Error()
					return nil
				})
				return
			}
			if _, err := capture.Run(opCtx); err == nil {
				m.markCaptured(vols, capVols, capture.Captured, true)
			}
			return
		}
		wasRunning := rec.State == stateRunning
		if wasRunning {
			m.update(inst, "stopping to create an image", func(r *instanceRecord) {
				r.State, r.StateReason = stateStopping, "stopping to create image "+capture.Image.ID
			})
			note := m.halt(inst, false) // forced off: the capture is crash-consistent only
			m.update(inst, "stopped to create an image", func(r *instanceRecord) {
				r.State, r.PID, r.StateReason = stateStopped, 0, withNote(r.StateReason, note)
			})
		}
		if _, err := capture.Run(opCtx); err == nil {
			// The frozen files are in the store now; the top goes on changing.
			m.markCaptured(vols, capVols, capture.Captured, false)
		}
		if wasRunning {
			m.update(inst, "starting after an image was created", func(r *instanceRecord) { r.State, r.StateReason = statePending, "" })
			if err := m.startMachine(opCtx, inst); err != nil {
				m.update(inst, "stopped after a failed start", func(r *instanceRecord) {
					r.State, r.StateReason = stateStopped, "start after creating an image failed: "+err.Error()
				})
			}
		}
	})
	return capture.Image, nil
}

// freeze puts a new top on each volume of a running instance at one instant (the
// machine's Snapshot). The intent is recorded first, so a crash at any point leaves a
// volume record whose files, in order, still hold the disk. The caller holds inst.op.
func (m *instances) freeze(ctx context.Context, inst *instance, vols []*volumeRecord, stamp string) error {
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
		frozen, top := filepath.Join(m.volumeDir(v), name), m.volumePath(v)
		before := *v
		v.Frozen = append(v.Frozen, frozenFile{Name: name})
		if err := m.putVolume(v); err != nil { // the intent, before any file moves
			rollback()
			return err
		}
		undo = append(undo, func() { c := before; m.putVolume(&c) })
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

// markCaptured records that the frozen files of each volume a capture took (all its
// files after a live capture; all but the top, which goes on changing, otherwise) are in
// the store as the layers made of them: their entries get their layer, and the volume's
// chain grows by it.
func (m *instances) markCaptured(vols []*volumeRecord, capVols []builder.CaptureVolume, captured []builder.Captured, live bool) {
	for i, v := range vols {
		files := capVols[i].Files
		count := len(files) - 1
		if live {
			count = len(files)
		}
		if i >= len(captured) || count == 0 && !captured[i].Flattened {
			continue
		}
		m.mu.Lock()
		cur := m.vols[v.ID]
		if cur == nil {
			m.mu.Unlock()
			continue
		}
		c := *cur
		c.Frozen = append([]frozenFile(nil), cur.Frozen...)
		m.mu.Unlock()
		if captured[i].Flattened { // one layer holds the whole disk: the chain starts anew on it
			c.Chain = captured[i].Layers
		}
		for j := 0; j < count; j++ {
			name := filepath.Base(files[j])
			for k := range c.Frozen {
				if c.Frozen[k].Name != name || c.Frozen[k].Layer != "" {
					continue
				}
				if captured[i].Flattened {
					c.Frozen[k].Layer = captured[i].Layers[0]
				} else {
					c.Frozen[k].Layer = captured[i].Layers[j]
					c.Chain = append(c.Chain, captured[i].Layers[j])
				}
			}
		}
		if captured[i].Flattened && count == 0 {
			if err := m.putVolume(&c); err != nil {
				log.L.WithError(err).WithField("volume", c.ID).Warn("record the flattened layer")
			}
			continue
		}
		if err := m.putVolume(&c); err != nil {
			log.L.WithError(err).WithField("volume", c.ID).Warn("record captured layers; the frozen files stay in the chain")
		}
	}
}
