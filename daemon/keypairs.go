package daemon

import (
	"net/http"

	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/keys"
	"kiln/daemon/peer"
	"kiln/images"
)

// listKeyPairs answers GET /v1/key-pairs: the caller's (an administrator's: everyone's).
func (s *server) listKeyPairs(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return answerList(w, r, keyPairFields, s.keys.List(s.viewer(c)))
}

// createKeyPair answers POST /v1/key-pairs: a pair kilnd makes (its private key in the
// answer, once), or a public key imported.
func (s *server) createKeyPair(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.CreateKeyPairRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := images.CheckTags(req.Tags, 0); err != nil {
		return err
	}
	var kp api.KeyPair
	var err error
	if req.PublicKey != "" {
		kp, err = s.keys.Import(c.User, req.Name, req.PublicKey, req.Tags)
	} else {
		kp, err = s.keys.Create(c.User, req.Name, req.Type, req.Tags)
	}
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("keyPair", kp.KeyPairID).WithField("uid", c.UID).Info("key pair created")
	audit.NoteCreated(r.Context(), "key-pair", kp.KeyPairID)
	writeJSON(w, http.StatusCreated, kp)
	return nil
}

func (s *server) inspectKeyPair(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	kp, err := s.keys.Get(r.PathValue("key"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, keys.View(kp))
	return nil
}

func (s *server) deleteKeyPair(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	id, err := s.keys.Delete(r.PathValue("key"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Deleted{ID: id})
	return nil
}
