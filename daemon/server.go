package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/console"
	"kiln/daemon/instances"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/daemon/settings"
	"kiln/daemon/vols"
	"kiln/images"
	"kiln/volumes"
)

// server holds what the handlers share.
type server struct {
	cfg     Config
	store   *images.Store
	builder *builder.Builder
	accel   string
	// accelWhy says why accel was chosen (the probe's result, or the operator's choice).
	accelWhy string
	uid      uint32 // kilnd's own uid
	audit    *audit.Log
	// settings are the settings file's, replaced whole on reload.
	settings atomic.Pointer[settings.Settings]

	// ops runs long operations; they stop when opsCtx is cancelled.
	opsCtx context.Context
	ops    sync.WaitGroup

	inst *instances.Manager
	vols *vols.Set
	// consoles is what kilnd knows of the instances' consoles.
	consoles console.Tracker

	// running maps an image being made to its operation.
	mu      sync.Mutex
	running map[string]*imageOp

	// reserved counts, per user, the images admitted whose records are not yet in the
	// store (admitImage), and the bytes of layers being made (admitStored).
	reserved struct {
		sync.Mutex
		images quota.Reservation
		bytes  quota.Reservation
	}
}

// limits are the limits in force, resolved.
func (s *server) limits() settings.Limits { return s.settings.Load().Limits.Resolved() }

// imageOp is an image being made: done is closed when it ends; progress says how far.
type imageOp struct {
	done     chan struct{}
	progress func() (done, total int64)
	instance string // the instance an image is being created of, held until done
}

// creatingImage is the image being created of the instance, if any.
func (s *server) creatingImage(instance string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, op := range s.running {
		if op.instance == instance {
			return id
		}
	}
	return ""
}

// Track registers an image being made (of an instance, or "") and returns the function
// that ends it.
func (s *server) Track(id, instance string, progress func() (int64, int64)) (end func()) {
	op := &imageOp{done: make(chan struct{}), progress: progress, instance: instance}
	s.mu.Lock()
	s.running[id] = op
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.running, id)
		s.mu.Unlock()
		close(op.done)
	}
}

// imageView is the API's view of an image for the caller: with its launch permission
// for its owner or an administrator, and its progress while it is made.
func (s *server) imageView(c peer.Caller, im *images.Image) api.Image {
	out := toAPIImage(im)
	if im.OwnerID == c.User || s.admin(c) {
		lp := im.LaunchPermission
		out.LaunchPermission = &api.LaunchPermission{Users: lp.Users, Groups: lp.Groups, Public: im.Public}
		if out.LaunchPermission.Users == nil {
			out.LaunchPermission.Users = []string{}
		}
		if out.LaunchPermission.Groups == nil {
			out.LaunchPermission.Groups = []string{}
		}
	}
	if im.State == images.StatePending {
		s.mu.Lock()
		op := s.running[im.ID]
		s.mu.Unlock()
		if op != nil {
			done, total := op.progress()
			out.Progress = &api.Progress{BytesDone: done, BytesTotal: total}
		}
	}
	return out
}

// maxWait bounds how long one request waits for an image to leave pending; clients
// ask again.
const maxWait = 30 * time.Second

// handlerFunc is a handler that returns its error; route writes it.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c peer.Caller) error

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, kind api.Kind, h handlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			c, ok := peer.CallerOf(r.Context())
			if !ok {
				writeError(w, fmt.Errorf("the caller's credentials are unknown: %w", errdefs.ErrPermissionDenied), api.KindNone)
				return
			}
			peer.BodyDeadline(w, r, seconds(s.limits().BodySeconds))
			ctx, passed := peer.WithPassed(r.Context())
			r = r.WithContext(ctx)
			var entry *audit.Entry
			if audit.Mutating(r) {
				r, entry = audit.Begin(r, c)
			}
			err := h(w, r, c)
			passed.Done() // closes those no handler claimed
			if entry != nil {
				entry.Result = "ok"
				if err != nil {
					ae := api.FromError(err, kind)
					entry.Result, entry.Message = ae.Code, ae.Message
				}
				s.audit.Write(r.Context(), entry)
			}
			l := log.G(r.Context()).WithField("op", r.Method+" "+r.URL.Path).WithField("uid", c.UID).WithField("dur", time.Since(start))
			if err != nil {
				ae := api.FromError(err, kind)
				if ae.Status() >= 500 {
					l.WithError(err).Error("request failed")
				} else {
					l.WithField("code", ae.Code).Debug(ae.Message)
				}
				writeJSON(w, ae.Status(), ae)
				return
			}
			l.Debug("request done")
		})
	}
	v := "/" + api.Version
	route("GET "+v+"/info", api.KindNone, s.info)
	route("GET "+v+"/images", api.KindImage, s.listImages)
	route("POST "+v+"/images", api.KindImage, s.registerImage)
	route("GET "+v+"/images/{image}", api.KindImage, s.inspectImage)
	route("DELETE "+v+"/images/{image}", api.KindImage, s.deregisterImage)
	route("POST "+v+"/images/{image}/tags", api.KindImage, s.tagImage)
	route("POST "+v+"/images/{image}/untag", api.KindImage, s.untagImage)
	route("POST "+v+"/images/{image}/share", api.KindImage, s.shareImage)
	route("POST "+v+"/images/{image}/unshare", api.KindImage, s.unshareImage)
	route("POST "+v+"/gc", api.KindNone, s.gc)
	route("GET "+v+"/instances", api.KindInstance, s.listInstances)
	route("POST "+v+"/instances", api.KindInstance, s.runInstances)
	route("GET "+v+"/instances/{instance}", api.KindInstance, s.inspectInstance)
	route("GET "+v+"/instances/{instance}/console", api.KindInstance, s.console)
	route("POST "+v+"/instances/{instance}/{action}", api.KindInstance, s.instanceAction)
	route("POST "+v+"/instances/{instance}/create-image", api.KindImage, s.createImage)
	route("POST "+v+"/images/{image}/copy", api.KindImage, s.copyImage)
	route("GET "+v+"/volumes", api.KindVolume, s.listVolumes)
	route("POST "+v+"/volumes", api.KindVolume, s.createVolume)
	route("GET "+v+"/volumes/{volume}", api.KindVolume, s.inspectVolume)
	route("DELETE "+v+"/volumes/{volume}", api.KindVolume, s.deleteVolume)
	route("POST "+v+"/volumes/{volume}/attach", api.KindVolume, s.attachVolume)
	route("POST "+v+"/volumes/{volume}/detach", api.KindVolume, s.detachVolume)
	route("GET "+v+"/snapshots", api.KindSnapshot, s.listSnapshots)
	route("GET "+v+"/snapshots/{snapshot}", api.KindSnapshot, s.inspectSnapshot)
	route("DELETE "+v+"/snapshots/{snapshot}", api.KindSnapshot, s.deleteSnapshot)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("no such API call: %s %s: %w", r.Method, r.URL.Path, api.ErrUnknownAction), api.KindNone)
	})
	return mux
}

// writeError answers with err as the API error for a resource kind (api.FromError).
func writeError(w http.ResponseWriter, err error, kind api.Kind) {
	e := api.FromError(err, kind)
	writeJSON(w, e.Status(), e)
}

// info answers GET /v1/info; the counts are of what the caller can see.
func (s *server) info(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	sees, nSnapshots := s.viewer(c), 0
	for _, sn := range s.store.Snapshots() {
		if sees(sn.OwnerID) {
			nSnapshots++
		}
	}
	writeJSON(w, http.StatusOK, api.Info{
		Version:           s.cfg.Version,
		Accelerator:       s.accel,
		AcceleratorReason: s.accelWhy,
		InstanceUnits:     s.inst.Units(),
		Root:              s.cfg.Root,
		Socket:            s.cfg.Socket,
		Images:            len(s.store.Images(func(im *images.Image) bool { return s.visible(c, im) })),
		Snapshots:         nSnapshots,
		Instances:         len(s.inst.List(false, sees)),
	})
	return nil
}

// admin reports whether the caller administers this kiln: root, a member of the admin
// group, or the user kilnd runs as (a user-mode daemon is its user's own).
func (s *server) admin(c peer.Caller) bool {
	return c.UID == 0 || c.UID == s.uid || c.InGroup(s.settings.Load().Admins())
}

// visible reports whether the caller may see an image, which is whether it may launch
// it: its own, one shared with it or a group of its, a public one; any for an
// administrator.
func (s *server) visible(c peer.Caller, im *images.Image) bool {
	return s.admin(c) || im.CanLaunch(c.User, c.Groups)
}

// lookupImage finds the image ref names for the caller: an ami- id, or a name (the
// caller's own image of that name first, else the one visible image of that name).
// An image the caller may not see is not found.
func (s *server) lookupImage(c peer.Caller, ref string) (*images.Image, error) {
	if images.IsID(images.ImagePrefix, ref) {
		im, err := s.store.Image(ref)
		if err != nil || !s.visible(c, im) {
			return nil, fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
		}
		return im, nil
	}
	named := s.store.Images(func(im *images.Image) bool { return im.Name == ref && s.visible(c, im) })
	for _, im := range named {
		if im.OwnerID == c.User {
			return im, nil
		}
	}
	switch len(named) {
	case 0:
		return nil, fmt.Errorf("image %q: no image has that id or name; see kiln image ls: %w", ref, errdefs.ErrNotFound)
	case 1:
		return named[0], nil
	}
	return nil, fmt.Errorf("image name %q is used by %d owners; use the image id: %w", ref, len(named), errdefs.ErrInvalidArgument)
}

func (s *server) listImages(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	q := r.URL.Query()
	f, err := images.ParseFilter(q["filter"])
	if err != nil {
		return err
	}
	owner := q.Get("owner")
	if owner == "self" {
		owner = c.User
	}
	list := s.store.Images(func(im *images.Image) bool {
		return s.visible(c, im) && (owner == "" || im.OwnerID == owner) && f.Match(im)
	})
	out := make([]api.Image, len(list))
	for i, im := range list {
		out[i] = s.imageView(c, im)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// inspectImage answers GET /v1/images/{image}; with ?wait=DURATION it first waits (at
// most maxWait) while the image is pending.
func (s *server) inspectImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	im, err := s.lookupImage(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if q := r.URL.Query().Get("wait"); q != "" && im.State == images.StatePending {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			return fmt.Errorf("wait %q: want a duration such as 30s: %w", q, errdefs.ErrInvalidArgument)
		}
		s.mu.Lock()
		op := s.running[im.ID]
		s.mu.Unlock()
		if op != nil {
			t := time.NewTimer(min(d, maxWait))
			select {
			case <-op.done:
			case <-t.C:
			case <-r.Context().Done():
			}
			t.Stop()
		}
		if im, err = s.store.Image(im.ID); err != nil {
			return err
		}
	}
	view := s.imageView(c, im)
	if im.OwnerID == c.User || s.admin(c) {
		view.Copies = s.copiesOf(im)
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// copiesOf lists the images other users copied from im and still have:
// the owner of an image it shared may see what became of it.
func (s *server) copiesOf(im *images.Image) []api.ImageCopy {
	var out []api.ImageCopy
	for _, cp := range s.store.Images(func(o *images.Image) bool {
		return o.CopiedFromID == im.ID && o.OwnerID != im.OwnerID
	}) {
		out = append(out, api.ImageCopy{ID: cp.ID, OwnerID: cp.OwnerID, Public: cp.Public})
	}
	return out
}

func (s *server) registerImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.RegisterImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	release, err := s.admitImage(c.User)
	if err != nil {
		return err
	}
	defer release() // the pending record counts from Prepare on
	breq, err := s.registerRequest(r.Context(), c, req)
	if err != nil {
		return err
	}
	// The layers are estimated by what the disks take on disk; their real sizes count
	// once the snapshots exist.
	var estimate int64
	for _, d := range breq.Disks {
		if st, err := d.File.Stat(); err == nil {
			estimate += quota.Allocated(st)
		}
	}
	stored, err := s.AdmitStored(c.User, estimate)
	if err != nil {
		peer.CloseFiles(breq.Files())
		return err
	}
	reg, err := s.builder.Prepare(r.Context(), breq)
	if err != nil {
		stored()
		return err
	}
	log.G(r.Context()).WithField("image", reg.Image.ID).WithField("uid", c.UID).Info("registering image")
	audit.NoteCreated(r.Context(), "image", reg.Image.ID)
	end := s.Track(reg.Image.ID, "", reg.Progress)
	s.ops.Go(func() {
		defer end()
		defer stored()
		// The image's fate is recorded on its record; nothing more to do with err here.
		_, _ = reg.Run(log.WithLogger(s.opsCtx, log.G(r.Context())))
	})
	writeJSON(w, http.StatusAccepted, s.imageView(c, reg.Image))
	return nil
}

// registerRequest makes the builder's request of an API one: the files it names are
// those passed with it, each used once, read by a tool running as the caller.
func (s *server) registerRequest(ctx context.Context, c peer.Caller, req api.RegisterImageRequest) (builder.RegisterRequest, error) {
	passed := peer.Files(ctx)
	used := make([]bool, len(passed))
	file := func(what string, i int) (*os.File, error) {
		switch {
		case i < 0 || i >= len(passed):
			return nil, fmt.Errorf("%s: file %d was not passed (%d files came with the request; kiln's client passes them): %w",
				what, i, len(passed), errdefs.ErrInvalidArgument)
		case used[i]:
			return nil, fmt.Errorf("%s: file %d is named twice: %w", what, i, errdefs.ErrInvalidArgument)
		}
		used[i] = true
		return passed[i], nil
	}
	tool := s.builder.Tool
	if s.uid == 0 && c.UID != 0 {
		tool = tool.As(c.UID, c.GID, c.GIDs) // qemu-img reads the caller's files with its rights only
	}
	breq := builder.RegisterRequest{
		Name:           req.Name,
		OwnerID:        c.User,
		Description:    req.Description,
		Cmdline:        req.Cmdline,
		Architecture:   req.Architecture,
		BootMode:       req.BootMode,
		RootDeviceType: req.RootDeviceType,
		Tags:           req.Tags,
		Tool:           &tool,
	}
	for i, d := range req.Disks {
		name := d.Name
		if name == "" {
			name = fmt.Sprintf("disk %d", i+1)
		}
		f, err := file("disk "+name, d.File)
		if err != nil {
			return breq, err
		}
		breq.Disks = append(breq.Disks, builder.Disk{Source: volumes.Source{File: f, Name: name, Format: d.Format}, DeviceName: d.DeviceName})
	}
	for _, bf := range []struct {
		what string
		i    *int
		set  **os.File
	}{{"kernel", req.KernelFile, &breq.Kernel}, {"initrd", req.InitrdFile, &breq.Initrd}} {
		if bf.i == nil {
			continue
		}
		f, err := file(bf.what, *bf.i)
		if err != nil {
			return breq, err
		}
		*bf.set = f
	}
	if n := len(passed) - len(breq.Files()); n > 0 {
		return breq, fmt.Errorf("%d passed files are not named by the request: %w", n, errdefs.ErrInvalidArgument)
	}
	peer.Claim(ctx) // the builder owns them now
	return breq, nil
}

// ownImage finds an image the caller may change: its own, or any for an administrator.
func (s *server) ownImage(c peer.Caller, ref string) (*images.Image, error) {
	im, err := s.lookupImage(c, ref)
	if err != nil {
		return nil, err
	}
	if !s.admin(c) && im.OwnerID != c.User {
		return nil, fmt.Errorf("image %s belongs to %s: %w", im.ID, im.OwnerID, errdefs.ErrPermissionDenied)
	}
	return im, nil
}

func (s *server) deregisterImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	im, err := s.ownImage(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if im.State == images.StatePending {
		return fmt.Errorf("image %s is still being made; deregister it when it is available or failed: %w", im.ID, errdefs.ErrFailedPrecondition)
	}
	if _, err := s.store.DeleteImage(im.ID); err != nil {
		return err
	}
	log.G(r.Context()).WithField("image", im.ID).WithField("uid", c.UID).Info("image deregistered")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) tagImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.TagRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if len(req.Tags) == 0 {
		return fmt.Errorf("no tags given (KEY=VALUE): %w", errdefs.ErrInvalidArgument)
	}
	return s.changeImage(w, c, r.PathValue("image"), func(im *images.Image) (err error) {
		im.Tags, err = images.MergeTags(im.Tags, req.Tags)
		return err
	})
}

func (s *server) untagImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.UntagRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if len(req.Keys) == 0 {
		return fmt.Errorf("no tag keys given: %w", errdefs.ErrInvalidArgument)
	}
	return s.changeImage(w, c, r.PathValue("image"), func(im *images.Image) error {
		for _, k := range req.Keys {
			if err := images.CheckTagKey(k); err != nil {
				return err
			}
			delete(im.Tags, k)
		}
		return nil
	})
}

// admitImage reserves one more image for the user, or refuses it when the images the
// user owns and those already reserved fill the quota. The reservation holds until
// release is called, which the caller does once the image's record is in the store (or
// its making failed): between the check and the record no concurrent request can pass
// on the same count. release may be called more than once.
func (s *server) admitImage(user string) (release func(), err error) {
	q := s.settings.Load().Quotas.Of(user)
	s.reserved.Lock()
	defer s.reserved.Unlock()
	n, making := 0, 0
	s.store.Images(func(im *images.Image) bool {
		if im.OwnerID == user {
			n++
			if im.State == images.StatePending {
				making++
			}
		}
		return false
	})
	held := int(s.reserved.images[user]) // admitted, their records not made yet
	if n+held+1 > q.Images {
		return nil, quota.Exceeded(user, "images", q.Images, n+held, 1)
	}
	// Each image being made holds a conversion (a qemu-img of kilnd's, and for a
	// register a qemu-nbd of the caller's, which she may stall): a bound on them
	// bounds what one user can make kilnd run at once.
	if making+held+1 > q.ImagesInProgress {
		return nil, quota.Exceeded(user, "images being made at once", q.ImagesInProgress, making+held, 1)
	}
	return s.reserved.images.Reserve(&s.reserved, user, 1), nil
}

// AdmitStored reserves bytes of new layers for user (an estimate: what the disks or
// overlays to be captured hold), or refuses them when the layers of the snapshots the user
// owns and the bytes reserved by the user's operations in flight would pass the stored
// quota. The reservation holds until release, which the caller calls when the operation
// has ended (its snapshots, with their real sizes, are then in the store); release may be
// called more than once.
func (s *server) AdmitStored(user string, bytes int64) (release func(), err error) {
	q := s.settings.Load().Quotas.Of(user)
	s.reserved.Lock()
	defer s.reserved.Unlock()
	use := s.reserved.bytes[user]
	for _, sn := range s.store.Snapshots() {
		if sn.OwnerID == user {
			use += sn.StorageSize
		}
	}
	if use+bytes > int64(q.StoredMiB)<<20 {
		return nil, quota.Exceeded(user, "stored layers (MiB)", q.StoredMiB, int(quota.MiB(use)), int(quota.MiB(bytes)))
	}
	return s.reserved.bytes.Reserve(&s.reserved, user, bytes), nil
}

func (s *server) shareImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.changeLaunchPermission(w, r, c, true)
}

func (s *server) unshareImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.changeLaunchPermission(w, r, c, false)
}

// changeLaunchPermission shares the image with (or unshares it from) the request's
// users and groups, and everyone for Public. The names must exist on this host.
func (s *server) changeLaunchPermission(w http.ResponseWriter, r *http.Request, c peer.Caller, share bool) error {
	var req api.ShareRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if len(req.Users) == 0 && len(req.Groups) == 0 && !req.Public {
		return fmt.Errorf("name users, groups or public (--user USER, --group GROUP, --public): %w", errdefs.ErrInvalidArgument)
	}
	if len(req.Users)+len(req.Groups) > images.MaxLaunchPermissions {
		return fmt.Errorf("at most %d users and groups at once: %w", images.MaxLaunchPermissions, errdefs.ErrInvalidArgument)
	}
	if share {
		if err := peer.CheckAccounts(req.Users, req.Groups); err != nil {
			return err
		}
	}
	im, err := s.ownImage(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if share && req.Public && !im.Public {
		if im.State != images.StateAvailable {
			return fmt.Errorf("image %s is %s; only an available image can be made public: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
		}
		q := s.settings.Load().Quotas.Of(im.OwnerID)
		n := len(s.store.Images(func(o *images.Image) bool { return o.OwnerID == im.OwnerID && o.Public }))
		if n+1 > q.PublicImages {
			return quota.Exceeded(im.OwnerID, "public images", q.PublicImages, n, 1)
		}
	}
	return s.changeImage(w, c, im.ID, func(im *images.Image) error {
		if !share {
			im.LaunchPermission.Unshare(req.Users, req.Groups)
			im.Public = im.Public && !req.Public
			return nil
		}
		im.Public = im.Public || req.Public
		return im.LaunchPermission.Share(req.Users, req.Groups)
	})
}

// changeImage applies change to the record of an image the caller may change and
// answers with the image as it is then.
func (s *server) changeImage(w http.ResponseWriter, c peer.Caller, ref string, change func(*images.Image) error) error {
	im, err := s.ownImage(c, ref)
	if err != nil {
		return err
	}
	if im, err = s.store.UpdateImage(im.ID, change); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.imageView(c, im))
	return nil
}

func (s *server) gc(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	if !s.admin(c) {
		return fmt.Errorf("gc is for administrators: %w", errdefs.ErrPermissionDenied)
	}
	res, err := s.store.GC(r.Context(), s.inst.Roots)
	if err != nil {
		return err
	}
	log.G(r.Context()).WithField("blobs", res.BlobsRemoved).WithField("bytes", res.BytesFreed).
		WithField("ingests", res.IngestsRemoved).Info("gc done")
	writeJSON(w, http.StatusOK, api.GCResult(res))
	return nil
}

func toAPIImage(im *images.Image) api.Image {
	out := api.Image{
		ID:                  im.ID,
		Name:                im.Name,
		OwnerID:             im.OwnerID,
		Description:         im.Description,
		State:               string(im.State),
		StateReason:         im.StateReason,
		Architecture:        im.Architecture,
		BootMode:            im.BootMode,
		RootDeviceType:      im.RootDeviceType,
		RootDeviceName:      im.RootDeviceName,
		BlockDeviceMappings: []api.BlockDeviceMapping{},
		Kernel:              im.Kernel.String(),
		Initrd:              im.Initrd.String(),
		Cmdline:             im.Cmdline,
		Tags:                im.Tags,
		Public:              im.Public,
		CreationDate:        im.CreationDate,
		ManifestDigest:      im.Manifest.String(),
		SourceInstanceID:    im.SourceInstanceID,
		SourceImageID:       im.SourceImageID,
		CopiedFromID:        im.CopiedFromID,
	}
	if out.Tags == nil {
		out.Tags = map[string]string{}
	}
	for _, m := range im.BlockDeviceMappings {
		am := api.BlockDeviceMapping{DeviceName: m.DeviceName}
		if m.EBS != nil {
			am.EBS = &api.EBS{
				SnapshotID:          m.EBS.SnapshotID,
				VolumeSize:          m.EBS.VolumeSize,
				DeleteOnTermination: m.EBS.DeleteOnTermination,
				Encrypted:           m.EBS.Encrypted,
			}
		}
		out.BlockDeviceMappings = append(out.BlockDeviceMappings, am)
	}
	return out
}
