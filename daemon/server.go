package daemon

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/console"
	"kiln/daemon/ec2"
	"kiln/daemon/events"
	"kiln/daemon/imaging"
	"kiln/daemon/instances"
	"kiln/daemon/keys"
	"kiln/daemon/machines"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/daemon/recyclebin"
	"kiln/daemon/settings"
	"kiln/daemon/vols"
	"kiln/images"
)

// server holds what the handlers share.
type server struct {
	cfg     Config
	store   *images.Store
	builder *builder.Builder
	accel   string
	// accelWhy says why accel was chosen (the probe's result, or the operator's choice).
	accelWhy string
	network  machines.Network // what guests' networks give, set up at start
	uid      uint32           // kilnd's own uid
	audit    *audit.Log
	// settings are the settings file's, replaced whole on reload (Run makes the pointer:
	// the event log reads it from before serve).
	settings *atomic.Pointer[settings.Settings]

	// ops runs long operations; they stop when opsCtx is cancelled.
	opsCtx context.Context
	ops    sync.WaitGroup

	inst *instances.Manager
	vols *vols.Set
	keys *keys.Set
	// consoles is what kilnd knows of the instances' consoles.
	consoles console.Tracker
	img      *imaging.Images
	// accessKeys sign requests to the EC2 endpoint, which is at ec2Endpoint (when
	// there is one) for ec2Region.
	accessKeys             *ec2.Keys
	ec2Endpoint, ec2Region string
	rules                  *recyclebin.Rules // the recycle bin's retention rules
	events                 *events.Log
}

// limits are the limits in force, resolved.
func (s *server) limits() settings.Limits { return s.settings.Load().Limits.Resolved() }

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
				if _, answered := err.(*streamedError); !answered {
					writeJSON(w, ae.Status(), ae)
				}
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
	route("POST "+v+"/images/{image}/tags", api.KindImage, s.retag(false, s.retagImage))
	route("POST "+v+"/images/{image}/untag", api.KindImage, s.retag(true, s.retagImage))
	route("POST "+v+"/images/{image}/share", api.KindImage, s.shareImage)
	route("POST "+v+"/images/{image}/unshare", api.KindImage, s.unshareImage)
	route("POST "+v+"/gc", api.KindNone, s.gc)
	route("GET "+v+"/instances", api.KindInstance, s.listInstances)
	route("POST "+v+"/instances", api.KindInstance, s.runInstances)
	route("GET "+v+"/instances/{instance}", api.KindInstance, s.inspectInstance)
	route("GET "+v+"/instances/{instance}/console", api.KindInstance, s.console)
	route("POST "+v+"/instances/{instance}/console/attach", api.KindInstance, s.attachConsole)
	route("POST "+v+"/instances/{instance}/{action}", api.KindInstance, s.instanceAction)
	route("POST "+v+"/instances/{instance}/create-image", api.KindImage, s.createImage)
	route("POST "+v+"/instances/{instance}/exec", api.KindInstance, s.exec)
	route("POST "+v+"/images/{image}/copy", api.KindImage, s.copyImage)
	route("POST "+v+"/images/{image}/push", api.KindImage, s.pushImage)
	route("POST "+v+"/images/pull", api.KindImage, s.pullImage)
	route("POST "+v+"/images/{image}/export", api.KindImage, s.exportImage)
	route("POST "+v+"/images/import", api.KindImage, s.importImage)
	route("GET "+v+"/volumes", api.KindVolume, s.listVolumes)
	route("POST "+v+"/volumes", api.KindVolume, s.createVolume)
	route("GET "+v+"/volumes/{volume}", api.KindVolume, s.inspectVolume)
	route("DELETE "+v+"/volumes/{volume}", api.KindVolume, s.deleteVolume)
	route("POST "+v+"/volumes/{volume}/attach", api.KindVolume, s.attachVolume)
	route("POST "+v+"/volumes/{volume}/detach", api.KindVolume, s.detachVolume)
	route("GET "+v+"/key-pairs", api.KindKeyPair, s.listKeyPairs)
	route("POST "+v+"/key-pairs", api.KindKeyPair, s.createKeyPair)
	route("GET "+v+"/key-pairs/{key}", api.KindKeyPair, s.inspectKeyPair)
	route("DELETE "+v+"/key-pairs/{key}", api.KindKeyPair, s.deleteKeyPair)
	route("GET "+v+"/snapshots", api.KindSnapshot, s.listSnapshots)
	route("GET "+v+"/snapshots/{snapshot}", api.KindSnapshot, s.inspectSnapshot)
	route("DELETE "+v+"/snapshots/{snapshot}", api.KindSnapshot, s.deleteSnapshot)
	route("POST "+v+"/images/{image}/description", api.KindImage, s.describeImage)
	route("GET "+v+"/access-keys", api.KindNone, s.listAccessKeys)
	route("POST "+v+"/access-keys", api.KindNone, s.createAccessKey)
	route("DELETE "+v+"/access-keys/{key}", api.KindNone, s.deleteAccessKey)
	route("POST "+v+"/images/{image}/deprecate", api.KindImage, s.deprecateImage)
	route("POST "+v+"/images/{image}/disable", api.KindImage, s.disableImage)
	route("POST "+v+"/images/{image}/enable", api.KindImage, s.enableImage)
	route("POST "+v+"/images/{image}/protect", api.KindImage, s.protectImage)
	route("POST "+v+"/images/{image}/unprotect", api.KindImage, s.unprotectImage)
	route("POST "+v+"/images/{image}/restore", api.KindImage, s.restoreImage)
	route("POST "+v+"/snapshots/{snapshot}/restore", api.KindSnapshot, s.restoreSnapshot)
	route("GET "+v+"/recycle-bin", api.KindNone, s.recycleBin)
	route("GET "+v+"/recycle-bin/rules", api.KindNone, s.listRules)
	route("POST "+v+"/recycle-bin/rules", api.KindNone, s.createRule)
	route("GET "+v+"/recycle-bin/rules/{rule}", api.KindNone, s.inspectRule)
	route("DELETE "+v+"/recycle-bin/rules/{rule}", api.KindNone, s.deleteRule)
	route("POST "+v+"/recycle-bin/rules/{rule}/unlock", api.KindNone, s.unlockRule)
	route("GET "+v+"/events", api.KindNone, s.streamEvents)
	route("POST "+v+"/instances/{instance}/tags", api.KindInstance, s.retag(false, s.retagInstance))
	route("POST "+v+"/instances/{instance}/untag", api.KindInstance, s.retag(true, s.retagInstance))
	route("POST "+v+"/volumes/{volume}/tags", api.KindVolume, s.retag(false, s.retagVolume))
	route("POST "+v+"/volumes/{volume}/untag", api.KindVolume, s.retag(true, s.retagVolume))
	route("POST "+v+"/snapshots/{snapshot}/tags", api.KindSnapshot, s.retag(false, s.retagSnapshot))
	route("POST "+v+"/snapshots/{snapshot}/untag", api.KindSnapshot, s.retag(true, s.retagSnapshot))
	route("POST "+v+"/key-pairs/{key}/tags", api.KindKeyPair, s.retag(false, s.retagKeyPair))
	route("POST "+v+"/key-pairs/{key}/untag", api.KindKeyPair, s.retag(true, s.retagKeyPair))
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
		Network:           s.network.String(),
		Root:              s.cfg.Root,
		Socket:            s.cfg.Socket,
		Images:            len(s.store.Images(func(im *images.Image) bool { return s.img.Visible(c, im) })),
		Snapshots:         nSnapshots,
		Instances:         len(s.inst.List(false, sees)),
		InstanceTypes:     slices.Clone(machines.InstanceTypes), // kilnd's own list: the answer is the caller's to change
		EC2Endpoint:       s.ec2Endpoint,
		EC2Region:         s.ec2Region,
	})
	return nil
}

// admin reports whether the caller administers this kiln: root, a member of the admin
// group, or the user kilnd runs as (a user-mode daemon is its user's own).
func (s *server) admin(c peer.Caller) bool {
	return c.UID == 0 || c.UID == s.uid || c.InGroup(s.settings.Load().Admins())
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
	deprecated, err := queryBool(r, "include-deprecated")
	if err != nil {
		return err
	}
	disabled, err := queryBool(r, "include-disabled")
	if err != nil {
		return err
	}
	list := s.store.Images(func(im *images.Image) bool {
		return s.img.Listed(c, im, deprecated, disabled) && (owner == "" || im.OwnerID == owner) && f.Match(im)
	})
	out := make([]api.Image, len(list))
	for i, im := range list {
		out[i] = s.img.View(c, im)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// inspectImage answers GET /v1/images/{image}; with ?wait=DURATION it first waits (at
// most imaging.MaxWait) while the image is pending.
func (s *server) inspectImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	im, err := s.img.Lookup(c, r.PathValue("image"))
	if err != nil {
		return err
	}
	if q := r.URL.Query().Get("wait"); q != "" && im.State == images.StatePending {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			return fmt.Errorf("wait %q: want a duration such as 30s: %w", q, errdefs.ErrInvalidArgument)
		}
		if im, err = s.img.Wait(r.Context(), im, d); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, s.img.Inspect(c, im))
	return nil
}

func (s *server) registerImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.RegisterImageRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	release, err := s.img.Admit(c.User)
	if err != nil {
		return err
	}
	defer release() // the pending record counts from Prepare on
	breq, err := s.img.RegisterRequest(r.Context(), c, req)
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
	stored, err := s.img.AdmitStored(c.User, estimate)
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
	end := s.img.Track(reg.Image.ID, "", reg.Progress)
	s.ops.Go(func() {
		defer end()
		defer stored()
		// The image's fate is recorded on its record; nothing more to do with err here.
		_, _ = reg.Run(log.WithLogger(s.opsCtx, log.G(r.Context())))
	})
	writeJSON(w, http.StatusAccepted, s.img.View(c, reg.Image))
	return nil
}

func (s *server) deregisterImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	gone, err := s.img.Deregister(c, r.PathValue("image"), func(owner string, tags map[string]string) (time.Duration, bool) {
		return s.rules.Retention(owner, api.BinResourceImage, tags)
	})
	if err != nil {
		return err
	}
	l := log.G(r.Context()).WithField("image", gone.ID).WithField("uid", c.UID)
	if gone.RecycleBinExitTime != nil {
		l = l.WithField("until", gone.RecycleBinExitTime)
	}
	l.Info("image deregistered")
	writeJSON(w, http.StatusOK, gone)
	return nil
}

func (s *server) shareImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.share(w, r, c, true)
}

func (s *server) unshareImage(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	return s.share(w, r, c, false)
}

// share changes the launch permission of an image (imaging.Images.Share).
func (s *server) share(w http.ResponseWriter, r *http.Request, c peer.Caller, share bool) error {
	var req api.ShareRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	return s.answerImage(w, c)(s.img.Share(c, r.PathValue("image"), req, share))
}

// answerImage answers with an image as the caller sees it, or with the error that
// changing it gave.
func (s *server) answerImage(w http.ResponseWriter, c peer.Caller) func(*images.Image, error) error {
	return func(im *images.Image, err error) error {
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, s.img.View(c, im))
		return nil
	}
}

func (s *server) gc(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	if !s.admin(c) {
		return fmt.Errorf("gc is for administrators: %w", errdefs.ErrPermissionDenied)
	}
	// What the recycle bin kept past its stay goes first, its content with the rest.
	purgedImages, purgedSnapshots, err := s.store.PurgeBin(s.img.Now())
	if len(purgedImages)+len(purgedSnapshots) > 0 {
		log.G(r.Context()).WithField("images", purgedImages).WithField("snapshots", purgedSnapshots).Info("recycle bin: stays ended, deleted for good")
	}
	if err != nil {
		return err
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
