package daemon

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/peer"
	"kiln/images"
	"kiln/internal/ids"
)

// The image lifecycle past deregistration's old meaning: deprecation, disabling,
// deregistration protection and the recycle bin (docs/api.md, "Image lifecycle").

func (s *server) deprecateImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.DeprecateRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	return s.answerImage(w, c)(s.img.Deprecate(c, r.PathValue("image"), req))
}

func (s *server) disableImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.answerImage(w, c)(s.img.Disable(c, r.PathValue("image")))
}

func (s *server) enableImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.answerImage(w, c)(s.img.Enable(c, r.PathValue("image")))
}

func (s *server) protectImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.ProtectRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	return s.answerImage(w, c)(s.img.Protect(c, r.PathValue("image"), req.Cooldown))
}

func (s *server) unprotectImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.answerImage(w, c)(s.img.Unprotect(c, r.PathValue("image")))
}

// restoreImage answers POST /v1/images/{image}/restore: {image} names an image in the
// caller's recycle bin.
func (s *server) restoreImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	im, err := s.img.Restore(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Info("image restored from the recycle bin")
	writeJSON(w, http.StatusOK, s.img.View(c, im))
	return nil
}

// restoreSnapshot answers POST /v1/snapshots/{snapshot}/restore.
func (s *server) restoreSnapshot(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	now := s.img.Now()
	var in []*images.Snapshot
	for _, sn := range s.store.BinSnapshots(now, false) {
		if s.viewer(c)(sn.OwnerID) {
			in = append(in, sn)
		}
	}
	sn, err := ids.Pick("snapshot in the recycle bin", images.SnapshotPrefix, r.PathValue("snapshot"), c.User, in, func(sn *images.Snapshot) ids.Ref {
		return ids.Ref{ID: sn.ID, Owner: sn.OwnerID}
	})
	if err != nil {
		return err
	}
	if sn, err = s.store.RestoreSnapshot(sn.ID, now); err != nil {
		return err
	}
	log.G(r.Context()).WithField("snapshot", sn.ID).WithField("uid", c.UID).Info("snapshot restored from the recycle bin")
	writeJSON(w, http.StatusOK, toAPISnapshot(sn))
	return nil
}

// recycleBin answers GET /v1/recycle-bin: what of the caller's is in the bin.
func (s *server) recycleBin(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	out := api.RecycleBin{Images: s.img.BinImages(c), Snapshots: []api.BinSnapshot{}}
	for _, sn := range s.store.BinSnapshots(s.img.Now(), false) {
		if s.viewer(c)(sn.OwnerID) {
			out.Snapshots = append(out.Snapshots, api.BinSnapshot{ID: sn.ID, OwnerID: sn.OwnerID, Description: sn.Description,
				VolumeSize: sn.VolumeSize, RecycleBinEnterTime: sn.Bin.Enter, RecycleBinExitTime: sn.Bin.Exit})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) createRule(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.CreateRuleRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	rule, err := s.rules.Create(c.User, req, s.img.Now())
	if err != nil {
		return err
	}
	audit.NoteCreated(r.Context(), "rule", rule.ID)
	log.G(r.Context()).WithField("rule", rule.ID).WithField("uid", c.UID).Info("recycle bin rule created")
	writeJSON(w, http.StatusCreated, rule)
	return nil
}

func (s *server) listRules(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	writeJSON(w, http.StatusOK, s.rules.List(s.viewer(c), s.img.Now()))
	return nil
}

func (s *server) inspectRule(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	rule, err := s.rules.Get(r.PathValue("rule"), c.User, s.viewer(c), s.img.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rule)
	return nil
}

func (s *server) deleteRule(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	id, err := s.rules.Delete(r.PathValue("rule"), c.User, s.viewer(c), s.img.Now())
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("rule", id).WithField("uid", c.UID).Info("recycle bin rule deleted")
	writeJSON(w, http.StatusOK, api.Deleted{ID: id})
	return nil
}

func (s *server) unlockRule(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	rule, err := s.rules.Unlock(r.PathValue("rule"), c.User, s.viewer(c), s.img.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rule)
	return nil
}

// queryBool reads a boolean query parameter (absent: false).
func queryBool(r *http.Request, name string) (bool, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(q)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want true or false: %w", name, q, errdefs.ErrInvalidArgument)
	}
	return b, nil
}
