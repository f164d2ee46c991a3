package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry/remote/auth"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/peer"
	"kiln/images"
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
	rm.Caller = c.User
	if err != nil {
		return err
	}
	ps := newProgressStream(w, r)
	rm.Progress = ps.report
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
		return ps.finish(http.StatusOK, nil, registryError(err))
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).WithField("reference", res.Reference).Info("image pushed")
	return ps.finish(http.StatusOK, api.PushImageResult{
		ImageID: im.ID, Reference: res.Reference, Digest: res.Digest.String(), Blobs: res.Blobs,
		BlobsPushed: res.BlobsPushed, BytesPushed: res.BytesPushed, BlobsSkipped: res.BlobsSkipped,
		BlobsMounted: res.BlobsMounted,
	}, nil)
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
	ps := newProgressStream(w, r)
	rm.Progress = ps.report
	p := s.puller()
	im, err := p.Pull(r.Context(), oci.PullRequest{
		Remote: rm, Name: req.Name, OwnerID: c.User, Description: req.Description, Tags: req.Tags,
		Admit: func(bytes int64) (func(), error) { return s.img.AdmitStored(c.User, bytes) },
		Have:  s.usable(c),
	})
	if err != nil {
		return ps.finish(0, nil, registryError(err))
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).WithField("reference", im.SourceRef).Info("image pulled")
	audit.NoteCreated(r.Context(), "image", im.ID)
	return ps.finish(http.StatusCreated, s.img.View(c, im), nil)
}

// usable reports the blobs the caller may use already: the layers, kernels and initrds of
// the images it may launch, and the layers of its own snapshots. A pull or import skips
// fetching only those (oci.PullRequest.Have).
func (s *server) usable(c peer.Caller) func(digest.Digest) bool {
	set := map[digest.Digest]bool{}
	chain := func(id string) {
		if sn, err := s.store.Snapshot(id); err == nil {
			for _, d := range sn.Chain {
				set[d] = true
			}
		}
	}
	for _, im := range s.store.Images(func(im *images.Image) bool { return s.img.Visible(c, im) }) {
		set[im.Kernel], set[im.Initrd], set[im.UEFIData] = true, true, true
		for _, b := range im.BlockDeviceMappings {
			if b.EBS != nil {
				chain(b.EBS.SnapshotID)
			}
		}
	}
	for _, sn := range s.store.Snapshots() {
		if s.viewer(c)(sn.OwnerID) {
			chain(sn.ID)
		}
	}
	return func(d digest.Digest) bool { return d != "" && set[d] }
}

// puller is the oci.Puller of kilnd's store: each layer gets a registered disk's
// checks, by kilnd's own qemu-img (the file is the store's, which no caller's process
// may hold).
func (s *server) puller() *oci.Puller {
	tool := s.builder.Tool
	return &oci.Puller{
		Store: s.store,
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
}

// passedFile is the one descriptor a request passed (index i), a regular file.
func passedFile(r *http.Request, i int, what string) (*os.File, error) {
	files := peer.Files(r.Context())
	if len(files) != 1 || i != 0 {
		return nil, fmt.Errorf("%s: want one passed file (index 0), %d came with the request (kiln's client passes the file it opened): %w",
			what, len(files), errdefs.ErrInvalidArgument)
	}
	st, err := files[0].Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: the passed file is not a regular file (%s): %w", what, st.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	return files[0], nil
}

// exportImage answers POST /v1/images/{image}/export: whoever may launch an image may
// export it (as they may push it), into the file they passed, opened by them.
func (s *server) exportImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.ExportImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	im, err := s.img.Lookup(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	f, err := passedFile(r, req.File, "export")
	if err != nil {
		return err
	}
	desc, n, err := oci.Export(r.Context(), s.store, im, f)
	if err != nil {
		return fmt.Errorf("export %s: %w", im.ID, err)
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).WithField("digest", desc.Digest).Info("image exported")
	writeJSON(w, http.StatusOK, api.ExportImageResult{ImageID: im.ID, Digest: desc.Digest.String(), Bytes: n})
	return nil
}

// importImage answers POST /v1/images/import: the image in the OCI image layout tar
// the caller passed, read with a pull's checks, owned by the caller; nothing when the
// import fails.
func (s *server) importImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.ImportImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return fmt.Errorf("import: a name is needed (kiln image import takes it from the file's name, or --name): %w", errdefs.ErrInvalidArgument)
	}
	if len(req.Source) > 4096 || strings.ContainsAny(req.Source, "\x00\n") {
		return fmt.Errorf("import: source: at most 4096 bytes on one line: %w", errdefs.ErrInvalidArgument)
	}
	f, err := passedFile(r, req.File, "import")
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	release, err := s.img.Admit(c.User)
	if err != nil {
		return err
	}
	defer release()
	ps := newProgressStream(w, r)
	im, err := s.puller().Import(r.Context(), f, st.Size(), req.Source, oci.PullRequest{
		Remote: oci.Remote{Progress: ps.report}, Name: req.Name, OwnerID: c.User, Description: req.Description, Tags: req.Tags,
		Admit: func(bytes int64) (func(), error) { return s.img.AdmitStored(c.User, bytes) },
		Have:  s.usable(c),
	})
	if err != nil {
		return ps.finish(0, nil, err)
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Info("image imported")
	audit.NoteCreated(r.Context(), "image", im.ID)
	return ps.finish(http.StatusCreated, s.img.View(c, im), nil)
}

// progressEvery is how often a progress stream tells the bytes moved.
const progressEvery = 250 * time.Millisecond

// progressStream answers a push or pull (api.MediaTypeProgressStream) when the request
// asks with ?progress=1: nothing is written until there are bytes to move, so an early
// refusal is an ordinary error answer; once there are, the stream ends with a progress
// event of where they ended, then the result or the error.
type progressStream struct {
	w           http.ResponseWriter
	done, total atomic.Int64
	stop        chan struct{}
	stopped     chan struct{}
	mu          sync.Mutex
	started     bool
}

func newProgressStream(w http.ResponseWriter, r *http.Request) *progressStream {
	ps := &progressStream{w: w}
	if r.URL.Query().Get("progress") != "1" {
		return ps
	}
	ps.stop, ps.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ps.stopped)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		var last api.Progress
		for {
			select {
			case <-ps.stop:
				return
			case <-t.C:
			}
			p := api.Progress{BytesDone: ps.done.Load(), BytesTotal: ps.total.Load()}
			if p == last || (p.BytesTotal == 0 && p.BytesDone == 0) {
				continue
			}
			last = p
			ps.send(api.StreamEvent{Progress: &p})
		}
	}()
	return ps
}

// report is oci.Remote.Progress.
func (ps *progressStream) report(done, total int64) {
	ps.done.Store(done)
	ps.total.Store(total)
}

func (ps *progressStream) send(ev api.StreamEvent) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.started {
		ps.w.Header().Set("Content-Type", api.MediaTypeProgressStream)
		ps.w.WriteHeader(http.StatusOK)
		ps.started = true
	}
	writeJSONTo(ps.w, ev)
	_ = http.NewResponseController(ps.w).Flush() // an error means the peer has gone
}

// finish answers with result (status, without a stream) or err: as the stream's last
// line once it has begun (returning a streamedError, which the route logs and audits
// without answering again), else as the handler's error.
func (ps *progressStream) finish(status int, result any, err error) error {
	if ps.stop != nil {
		close(ps.stop)
		<-ps.stopped
		// Once bytes were to move, the stream tells where they ended, however quick.
		if p := (api.Progress{BytesDone: ps.done.Load(), BytesTotal: ps.total.Load()}); p.BytesTotal > 0 {
			ps.send(api.StreamEvent{Progress: &p})
		}
	}
	if !ps.started {
		if err != nil {
			return err
		}
		writeJSON(ps.w, status, result)
		return nil
	}
	if err != nil {
		ps.send(api.StreamEvent{Error: api.FromError(err, api.KindImage)})
		return &streamedError{err}
	}
	b, merr := json.Marshal(result)
	if merr != nil {
		return merr
	}
	ps.send(api.StreamEvent{Result: b})
	return nil
}

// streamedError is an error already answered on a progress stream.
type streamedError struct{ err error }

func (e *streamedError) Error() string { return e.err.Error() }
func (e *streamedError) Unwrap() error { return e.err }
