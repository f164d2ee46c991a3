package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"oras.land/oras-go/v2/registry/remote/auth"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/peer"
	"kiln/images/oci"
)

// remote is the registry of one push or pull request: its credential and CA
// certificates are this request's only, and go nowhere else (no log, no record).
func (s *server) remote(ref string, r api.Registry) (oci.Remote, error) {
	if len(r.CACerts) > api.MaxCACerts {
		return oci.Remote{}, fmt.Errorf("CA certificates: %d bytes, at most %d: %w", len(r.CACerts), api.MaxCACerts, errdefs.ErrInvalidArgument)
	}
	rm := oci.Remote{Reference: ref, CACerts: []byte(r.CACerts), PlainHTTP: r.PlainHTTP, UserAgent: "kiln/" + s.cfg.Version}
	if a := r.Auth; a != nil {
		rm.Credential = auth.Credential{Username: a.Username, Password: a.Password, RefreshToken: a.IdentityToken, AccessToken: a.RegistryToken}
	}
	return rm, nil
}

// registryError is err as the API says it: bytes that are not what the registry said
// they are get a code of their own (not an internal error of kilnd's), and what the
// registry lacks is not an image of kiln's.
func registryError(err error) error {
	return api.FromError(err, api.KindRegistry)
}

// pushImage answers POST /v1/images/{image}/push: whoever may launch an image may push
// it (as they may copy it). It answers when the registry has it all.
func (s *server) pushImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.PushImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	im, err := s.img.Lookup(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	rm, err := s.remote(req.Reference, req.Registry)
	if err != nil {
		return err
	}
	var res oci.PushResult
	if req.ContainerDisk {
		tmp := filepath.Join(s.store.Root(), "run") // kilnd's own (docs/layout.md)
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return err
		}
		tool := s.builder.Tool
		res, err = oci.PushContainerDisk(r.Context(), s.store, im, rm, func(ctx context.Context, layers []string, dst string) error {
			return tool.Flatten(ctx, layers, nil, dst)
		}, tmp)
	} else {
		res, err = oci.Push(r.Context(), s.store, im, rm)
	}
	if err != nil {
		return registryError(err)
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).WithField("reference", res.Reference).Info("image pushed")
	writeJSON(w, http.StatusOK, api.PushImageResult{
		ImageID: im.ID, Reference: res.Reference, Digest: res.Digest.String(), Blobs: res.Blobs,
		BlobsPushed: res.BlobsPushed, BytesPushed: res.BytesPushed, BlobsSkipped: res.BlobsSkipped,
		BlobsMounted: res.BlobsMounted,
	})
	return nil
}

// pullImage answers POST /v1/images/pull: the image, available, owned by the caller,
// once every byte is verified and every layer checked; nothing when the pull fails.
func (s *server) pullImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.PullImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	rm, err := s.remote(req.Reference, req.Registry)
	if err != nil {
		return err
	}
	release, err := s.img.Admit(c.User)
	if err != nil {
		return err
	}
	defer release() // the record counts once Pull returns it
	tool := s.builder.Tool
	p := &oci.Puller{
		Store: s.store,
		// Each layer gets a registered disk's checks, by kilnd's own qemu-img (the file
		// is the store's, which no caller's process may hold).
		Check: func(ctx context.Context, path, name string, parents []string) (int64, string, error) {
			f, err := os.Open(path)
			if err != nil {
				return 0, "", err
			}
			defer f.Close()
			info, parent, err := tool.CheckLayer(ctx, f, name, parents)
			return info.VirtualSize, parent, err
		},
	}
	im, err := p.Pull(r.Context(), oci.PullRequest{
		Remote: rm, Name: req.Name, OwnerID: c.User, Description: req.Description, Tags: req.Tags,
		Admit: func(bytes int64) (func(), error) { return s.img.AdmitStored(c.User, bytes) },
	})
	if err != nil {
		return registryError(err)
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).WithField("reference", im.SourceRef).Info("image pulled")
	audit.NoteCreated(r.Context(), "image", im.ID)
	writeJSON(w, http.StatusCreated, s.img.View(c, im))
	return nil
}
