package daemon

import (
	"net/http"

	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/peer"
	"kiln/images"
	"kiln/internal/ids"
)

func toAPISnapshot(sn *images.Snapshot) api.Snapshot {
	out := api.Snapshot{ID: sn.ID, OwnerID: sn.OwnerID, Description: sn.Description, VolumeSize: sn.VolumeSize,
		StorageSize: sn.StorageSize, Layer: sn.Layer.String(), ImageID: sn.ImageID, Tags: sn.Tags, StartTime: sn.StartTime,
		Chain: []string{}}
	for _, d := range sn.Chain {
		out.Chain = append(out.Chain, d.String())
	}
	if out.Tags == nil {
		out.Tags = map[string]string{}
	}
	return out
}

func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	out := []api.Snapshot{}
	for _, sn := range s.store.Snapshots() {
		if s.viewer(c)(sn.OwnerID) {
			out = append(out, toAPISnapshot(sn))
		}
	}
	return answerList(w, r, snapshotFields, out)
}

// snapshot finds a snapshot the caller owns (or any, for an administrator), by its id or
// the start of it.
func (s *server) snapshot(c peer.Caller, ref string) (*images.Snapshot, error) {
	var mine []*images.Snapshot
	for _, sn := range s.store.Snapshots() {
		if s.viewer(c)(sn.OwnerID) {
			mine = append(mine, sn)
		}
	}
	return ids.Pick("snapshot", images.SnapshotPrefix, ref, c.User, mine, func(sn *images.Snapshot) ids.Ref {
		return ids.Ref{ID: sn.ID, Owner: sn.OwnerID}
	})
}

func (s *server) inspectSnapshot(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	sn, err := s.snapshot(c, r.PathValue("snapshot"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toAPISnapshot(sn))
	return nil
}

func (s *server) deleteSnapshot(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	sn, err := s.snapshot(c, r.PathValue("snapshot"))
	if err != nil {
		return err
	}
	// A snapshot a retention rule of its owner's matches goes to the recycle bin.
	gone := api.Deleted{ID: sn.ID}
	if keep, ok := s.rules.Retention(sn.OwnerID, api.BinResourceSnapshot, sn.Tags); ok {
		now := s.img.Now().UTC()
		stay := images.BinStay{Enter: now, Exit: now.Add(keep)}
		if err := s.store.BinSnapshot(sn.ID, stay); err != nil {
			return err
		}
		gone.RecycleBinExitTime = &stay.Exit
	} else if err := s.store.DeleteSnapshot(sn.ID); err != nil {
		return err
	}
	log.G(r.Context()).WithField("snapshot", sn.ID).WithField("uid", c.UID).Info("snapshot deleted")
	writeJSON(w, http.StatusOK, gone)
	return nil
}
