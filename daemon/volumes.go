package daemon

import (
	"net/http"

	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/peer"
	"kiln/images"
)

func (s *server) listVolumes(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return answerList(w, r, volumeFields, s.vols.List(s.viewer(c)))
}

func (s *server) inspectVolume(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	v, err := s.vols.Inspect(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// createVolume answers POST /v1/volumes: a standalone volume, blank or over a snapshot.
func (s *server) createVolume(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.CreateVolumeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	// Layers must not go between looking the snapshot up and the volume record naming
	// them (Create holds the store too; a GC never queues, so holding it twice is safe).
	release := s.store.Hold()
	defer release()
	var sn *images.Snapshot
	if req.SnapshotID != "" {
		var err error
		if sn, err = s.snapshot(c, req.SnapshotID); err != nil {
			return api.FromError(err, api.KindSnapshot)
		}
	}
	v, err := s.vols.Create(r.Context(), c.User, req.SizeGiB, sn, req.Tags)
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("volume", v.ID).WithField("uid", c.UID).Info("volume created")
	audit.NoteCreated(r.Context(), "volume", v.ID)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func (s *server) deleteVolume(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	id, err := s.vols.Remove(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Deleted{ID: id})
	return nil
}

// attachVolume answers POST /v1/volumes/{volume}/attach: a running instance gets it
// hot-plugged (the guest sees a new disk), a stopped one at its next start.
func (s *server) attachVolume(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.AttachVolumeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	id, err := s.vols.Resolve(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	inst, err := s.inst.Get(req.Instance, c.User, s.viewer(c))
	if err != nil {
		return api.FromError(err, api.KindInstance)
	}
	v, err := s.inst.Attach(r.Context(), inst, id, req.DeviceName)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *server) detachVolume(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	id, err := s.vols.Resolve(r.PathValue("volume"), s.viewer(c))
	if err != nil {
		return err
	}
	v, err := s.inst.Detach(r.Context(), id, s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
