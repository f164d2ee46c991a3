package daemon

import (
	"fmt"
	"maps"
	"net/http"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/peer"
	"kiln/images"
)

// tagChange is a change of a resource's tags: it gets the tags and returns the new
// ones, never changing the map it gets (a record's copies may share it).
type tagChange = func(map[string]string) (map[string]string, error)

// retag is a handler of POST …/{id}/tags (untag false) or …/{id}/untag: it reads the
// request, and apply makes the change on the resource the path names, answering the
// resource as GET shows it. Every kind checks tags as images do (images.MergeTags,
// images.CheckTagKey), and finds the resource as its other changes do, so whoever may
// not change it gets the answer they get there (not found, or unauthorized).
func (s *server) retag(untag bool, apply func(r *http.Request, c peer.Caller, change tagChange) (any, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
		var change tagChange
		if untag {
			var req api.UntagRequest
			if err := api.Decode(r.Body, &req); err != nil {
				return err
			}
			if len(req.Keys) == 0 {
				return fmt.Errorf("no tag keys given: %w", errdefs.ErrInvalidArgument)
			}
			change = func(tags map[string]string) (map[string]string, error) {
				out := maps.Clone(tags)
				for _, k := range req.Keys {
					if err := images.CheckTagKey(k); err != nil {
						return nil, err
					}
					delete(out, k)
				}
				return out, nil
			}
		} else {
			var req api.TagRequest
			if err := api.Decode(r.Body, &req); err != nil {
				return err
			}
			if len(req.Tags) == 0 {
				return fmt.Errorf("no tags given (KEY=VALUE): %w", errdefs.ErrInvalidArgument)
			}
			change = func(tags map[string]string) (map[string]string, error) { return images.MergeTags(tags, req.Tags) }
		}
		out, err := apply(r, c, change)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *server) retagImage(r *http.Request, c peer.Caller, change tagChange) (any, error) {
	im, err := s.img.Change(c, r.PathValue("image"), func(im *images.Image) (err error) {
		im.Tags, err = change(im.Tags)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.img.View(c, im), nil
}

func (s *server) retagInstance(r *http.Request, c peer.Caller, change tagChange) (any, error) {
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return nil, err
	}
	if err := s.inst.Tag(inst, change); err != nil {
		return nil, err
	}
	view, _ := s.instanceView(inst)
	return view, nil
}

func (s *server) retagVolume(r *http.Request, c peer.Caller, change tagChange) (any, error) {
	return s.vols.Tag(r.PathValue("volume"), s.viewer(c), change)
}

func (s *server) retagSnapshot(r *http.Request, c peer.Caller, change tagChange) (any, error) {
	sn, err := s.snapshot(c, r.PathValue("snapshot"))
	if err != nil {
		return nil, err
	}
	sn, err = s.store.UpdateSnapshot(sn.ID, func(sn *images.Snapshot) (err error) {
		sn.Tags, err = change(sn.Tags)
		return err
	})
	if err != nil {
		return nil, err
	}
	return toAPISnapshot(sn), nil
}

func (s *server) retagKeyPair(r *http.Request, c peer.Caller, change tagChange) (any, error) {
	return s.keys.Tag(r.PathValue("key"), c.User, s.viewer(c), change)
}
