package daemon

import (
	"net/http"
	"time"

	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/peer"
	"kiln/images"
)

// createImage answers POST /v1/instances/{instance}/create-image: the new image,
// pending; the capture runs as an operation.
func (s *server) createImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.CreateImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	// Another's instance is not found: only its owner (or an administrator) captures it.
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return api.FromError(err, api.KindInstance)
	}
	release, err := s.img.Admit(c.User)
	if err != nil {
		return err
	}
	defer release() // the pending record counts once createImage returns
	im, err := s.inst.CreateImage(r.Context(), inst, c.User, req)
	if err != nil {
		return err
	}
	audit.NoteCreated(r.Context(), "image", im.ID)
	writeJSON(w, http.StatusAccepted, s.img.View(c, im))
	return nil
}

// copyImage answers POST /v1/images/{image}/copy: a new record over the same content.
func (s *server) copyImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.CopyImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	src, err := s.img.Lookup(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if err := images.CheckDescription(req.Description); err != nil {
		return err
	}
	release, err := s.img.Admit(c.User)
	if err != nil {
		return err
	}
	defer release()
	im, err := s.store.CopyImage(src.ID, req.Name, c.User, req.Description, req.CopyTags, time.Now().UTC())
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Infof("image copied from %s", src.ID)
	audit.NoteCreated(r.Context(), "image", im.ID)
	writeJSON(w, http.StatusCreated, s.img.View(c, im))
	return nil
}
