package daemon

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/images"
)

// createImage answers POST /v1/instances/{instance}/create-image: the new image,
// pending; the capture runs as an operation.
func (s *server) createImage(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.CreateImageRequest
	if err := decodeBody(r.Body, &req); err != nil {
		return err
	}
	inst, err := s.inst.get(r.PathValue("instance"), s.viewer(c))
	if err != nil {
		return api.FromError(err, api.KindInstance)
	}
	im, err := s.inst.createImage(r.Context(), s, inst, c.User, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, toAPIImage(im))
	return nil
}

// copyImage answers POST /v1/images/{image}/copy: a new record over the same content.
func (s *server) copyImage(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.CopyImageRequest
	if err := decodeBody(r.Body, &req); err != nil {
		return err
	}
	src, err := s.lookupImage(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return err
	}
	im, err := s.store.CopyImage(src.ID, req.Name, c.User, req.Description, req.CopyTags, time.Now().UTC())
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Infof("image copied from %s", src.ID)
	writeJSON(w, http.StatusCreated, toAPIImage(im))
	return nil
}

// createImage makes an image of the instance's volumes, the cloud's default way: a
// running instance is stopped cleanly, captured, and started again; a stopped one is
// captured as it is. The instance is held for the whole operation.
func (m *instances) createImage(ctx context.Context, s *server, inst *instance, owner string, req api.CreateImageRequest) (*images.Image, error) {
	if req.NoReboot {
		return nil, fmt.Errorf("a live capture (--no-reboot) is not built yet; create the image without it (the instance is stopped, captured and started again): %w", errdefs.ErrNotImplemented)
	}
	inst.op.Lock()
	rec := inst.rec
	if rec.State != stateRunning && rec.State != stateStopped {
		inst.op.Unlock()
		return nil, fmt.Errorf("instance %s is %s; an image can be made of a running or stopped instance: %w", rec.ID, rec.State, errdefs.ErrFailedPrecondition)
	}
	source := &images.Image{ID: rec.ImageID, Config: images.Config{Architecture: "x86_64", BootMode: "legacy-bios",
		RootDeviceName: rec.RootDeviceName, RootDeviceType: rec.RootDeviceType, Kernel: rec.Kernel, Initrd: rec.Initrd, Cmdline: rec.Cmdline}}
	if orig, err := m.store.Image(rec.ImageID); err == nil {
		source.Architecture, source.BootMode = orig.Architecture, orig.BootMode
	}
	var vols []builder.CaptureVolume
	m.mu.Lock()
	for _, mp := range rec.Mappings {
		if v := m.vols[mp.VolumeID]; v != nil {
			vols = append(vols, builder.CaptureVolume{DeviceName: v.DeviceName, Path: m.volumePath(v), Chain: v.Chain,
				SizeGiB: v.SizeGiB, DeleteOnTermination: mp.DeleteOnTermination})
		}
	}
	m.mu.Unlock()
	capture, err := s.builder.PrepareCapture(builder.CaptureRequest{Name: req.Name, OwnerID: owner, Description: req.Description,
		Tags: req.Tags, SourceInstanceID: rec.ID, Source: source, Volumes: vols})
	if err != nil {
		inst.op.Unlock()
		return nil, err
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.running[capture.Image.ID] = done
	s.mu.Unlock()
	m.ops.Go(func() {
		defer func() {
			inst.op.Unlock()
			s.mu.Lock()
			delete(s.running, capture.Image.ID)
			s.mu.Unlock()
			close(done)
		}()
		opCtx := log.WithLogger(m.opsCtx, log.G(ctx))
		wasRunning := rec.State == stateRunning
		if wasRunning {
			if err := m.set(inst, func(r *instanceRecord) {
				r.State, r.StateReason = stateStopping, "stopping to create image "+capture.Image.ID
			}); err != nil {
				log.G(opCtx).WithError(err).Error("create image")
			}
			m.halt(inst, false)
			m.set(inst, func(r *instanceRecord) { r.State, r.PID = stateStopped, 0 })
		}
		_, _ = capture.Run(opCtx) // the outcome is on the image's record
		if wasRunning {
			m.set(inst, func(r *instanceRecord) { r.State, r.StateReason = statePending, "" })
			if err := m.startMachine(opCtx, inst); err != nil {
				m.set(inst, func(r *instanceRecord) {
					r.State, r.StateReason = stateStopped, "start after creating an image failed: "+err.Error()
				})
			}
		}
	})
	return capture.Image, nil
}
