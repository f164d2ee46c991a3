package imaging

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/images"
	"kiln/internal/ids"
	"kiln/volumes"
)

// Images is the image side of the daemon as callers meet it. It is safe for concurrent
// use.
type Images struct {
	store *images.Store
	tool  volumes.Tool // reads callers' disks at register (as the caller, when kilnd is root)
	self  uint32       // kilnd's uid
	admin func(c peer.Caller) bool
	quota func(user string) quota.Quota

	// running maps an image being made to its operation.
	mu      sync.Mutex
	running map[string]*op

	// reserved counts, per user, the images admitted whose records are not yet in the
	// store (Admit), and the bytes of layers being made (AdmitStored).
	reserved struct {
		sync.Mutex
		images quota.Reservation
		bytes  quota.Reservation
	}

	// Now is the clock deprecation, protection cooldowns and the recycle bin are read
	// by (time.Now unless kilnd's test clock replaces it).
	Now func() time.Time
}

// New is the image side over store. admin says who administers kiln; q gives each
// user's quota as the settings say now.
func New(store *images.Store, tool volumes.Tool, self uint32, admin func(peer.Caller) bool, q func(user string) quota.Quota) *Images {
	return &Images{store: store, tool: tool, self: self, admin: admin, quota: q, running: map[string]*op{}, Now: time.Now}
}

// MaxWait bounds how long one request waits for an image to leave pending; clients ask
// again.
const MaxWait = 30 * time.Second

// Wait waits, at most d (and MaxWait), for the pending image to be made, and returns
// its record then.
func (x *Images) Wait(ctx context.Context, im *images.Image, d time.Duration) (*images.Image, error) {
	x.mu.Lock()
	o := x.running[im.ID]
	x.mu.Unlock()
	if o != nil {
		t := time.NewTimer(min(d, MaxWait))
		select {
		case <-o.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return x.store.Image(im.ID)
}

// InFlight is the number of images being made.
func (x *Images) InFlight() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.running)
}

// op is an image being made: done is closed when it ends; progress says how far.
type op struct {
	done     chan struct{}
	progress func() (done, total int64)
	instance string // the instance an image is being created of, held until done
}

// Creating is the image being created of the instance, if any.
func (x *Images) Creating(instance string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, o := range x.running {
		if o.instance == instance {
			return id
		}
	}
	return ""
}

// Track registers an image being made (of an instance, or "") and returns the function
// that ends it.
func (x *Images) Track(id, instance string, progress func() (int64, int64)) (end func()) {
	o := &op{done: make(chan struct{}), progress: progress, instance: instance}
	x.mu.Lock()
	x.running[id] = o
	x.mu.Unlock()
	return func() {
		x.mu.Lock()
		delete(x.running, id)
		x.mu.Unlock()
		close(o.done)
	}
}

// View is the API's view of an image for the caller: with its launch permission
// for its owner or an administrator, and its progress while it is made.
func (x *Images) View(c peer.Caller, im *images.Image) api.Image {
	out := ToAPI(im)
	if im.OwnerID != c.User && !x.admin(c) {
		out.SourceRef = "" // a registry's or a file's name is the owner's business
	}
	if im.OwnerID == c.User || x.admin(c) {
		if t := im.LastLaunchedTime; !t.IsZero() { // when others launch it is theirs to know
			out.LastLaunchedTime = &t
		}
		lp := im.LaunchPermission
		out.LaunchPermission = &api.LaunchPermission{Users: lp.Users, Groups: lp.Groups, Public: im.Public}
		if out.LaunchPermission.Users == nil {
			out.LaunchPermission.Users = []string{}
		}
		if out.LaunchPermission.Groups == nil {
			out.LaunchPermission.Groups = []string{}
		}
	}
	out.DeprecationTime = im.DeprecationTime
	out.DeregistrationProtection = im.Protection(x.Now())
	if im.State == images.StatePending {
		x.mu.Lock()
		o := x.running[im.ID]
		x.mu.Unlock()
		if o != nil {
			done, total := o.progress()
			out.Progress = &api.Progress{BytesDone: done, BytesTotal: total}
		}
	}
	return out
}

// Visible reports whether the caller may see an image, which is whether it may launch
// it (when it is available): its own, one shared with it or a group of its, a public
// one; any for an administrator. A disabled image is its owner's (and administrators')
// alone; one in the recycle bin is no image to anyone (the bin lists it: BinList).
func (x *Images) Visible(c peer.Caller, im *images.Image) bool {
	switch {
	case im.InBin():
		return false
	case im.State == images.StateDisabled:
		return x.admin(c) || im.OwnerID == c.User
	}
	return x.admin(c) || im.CanLaunch(c.User, c.Groups)
}

// Lookup finds the image ref names for the caller: an ami- id, a name (the caller's own
// image of that name first, else the one visible image of that name), or the start of
// one id (ami-c0b7). An image the caller may not see is not found.
func (x *Images) Lookup(c peer.Caller, ref string) (*images.Image, error) {
	if ids.IsID(images.ImagePrefix, ref) {
		if im, err := x.store.Image(ref); err == nil && x.Visible(c, im) {
			return im, nil
		}
	}
	visible := x.store.Images(func(im *images.Image) bool { return x.Visible(c, im) })
	slices.SortFunc(visible, func(a, b *images.Image) int { return strings.Compare(a.ID, b.ID) })
	return ids.Pick("image", images.ImagePrefix, ref, c.User, visible, func(im *images.Image) ids.Ref {
		return ids.Ref{ID: im.ID, Name: im.Name, Owner: im.OwnerID}
	})
}

// Inspect is View with the images other users copied from im and still have, for its
// owner or an administrator: the owner of an image it shared may see what became of it.
func (x *Images) Inspect(c peer.Caller, im *images.Image) api.Image {
	view := x.View(c, im)
	if im.OwnerID != c.User && !x.admin(c) {
		return view
	}
	var out []api.ImageCopy
	for _, cp := range x.store.Images(func(o *images.Image) bool {
		return o.CopiedFromID == im.ID && o.OwnerID != im.OwnerID && !o.InBin()
	}) {
		out = append(out, api.ImageCopy{ID: cp.ID, OwnerID: cp.OwnerID, Public: cp.Public})
	}
	view.Copies = out
	return view
}

// RegisterRequest makes the builder's request of an API one: the files it names are
// those passed with it, each used once, read by a tool running as the caller.
func (x *Images) RegisterRequest(ctx context.Context, c peer.Caller, req api.RegisterImageRequest) (builder.RegisterRequest, error) {
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
	tool := x.tool
	if x.self == 0 && c.UID != 0 {
		tool = tool.As(c.UID, c.GID, c.GIDs) // qemu-img reads the caller's files with its rights only
	}
	breq := builder.RegisterRequest{
		Name:           req.Name,
		OwnerID:        c.User,
		Description:    req.Description,
		Cmdline:        req.Cmdline,
		SSHUser:        req.SSHUser,
		Architecture:   req.Architecture,
		BootMode:       req.BootMode,
		RootDeviceType: req.RootDeviceType,
		Tags:           req.Tags,
		Tool:           &tool,
		SecureBoot:     req.SecureBoot,
		TPMSupport:     req.TPMSupport,
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
		breq.Disks = append(breq.Disks, builder.Disk{Source: volumes.Source{File: f, Name: name, Format: d.Format, ForceRaw: d.ForceRaw}, DeviceName: d.DeviceName})
	}
	for _, bf := range []struct {
		what string
		i    *int
		set  **os.File
	}{{"kernel", req.KernelFile, &breq.Kernel}, {"initrd", req.InitrdFile, &breq.Initrd}, {"UEFI data", req.UEFIDataFile, &breq.UEFIData}} {
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

// Own finds an image the caller may change: its own, or any for an administrator.
func (x *Images) Own(c peer.Caller, ref string) (*images.Image, error) {
	im, err := x.Lookup(c, ref)
	if err != nil {
		return nil, err
	}
	if !x.admin(c) && im.OwnerID != c.User {
		return nil, fmt.Errorf("image %s belongs to %s: %w", im.ID, im.OwnerID, errdefs.ErrPermissionDenied)
	}
	return im, nil
}

// owned counts the user's images that count for its quotas (those not in the recycle
// bin): all of them, the public ones, and those being made.
func (x *Images) owned(user string) (n, public, making int) {
	x.store.Images(func(im *images.Image) bool {
		if im.OwnerID == user && !im.InBin() {
			n++
			if im.Public {
				public++
			}
			if im.State == images.StatePending {
				making++
			}
		}
		return false
	})
	return n, public, making
}

// Admit reserves one more image for the user, or refuses it when the images the
// user owns and those already reserved fill the quota. The reservation holds until
// release is called, which the caller does once the image's record is in the store (or
// its making failed): between the check and the record no concurrent request can pass
// on the same count. release may be called more than once.
func (x *Images) Admit(user string) (release func(), err error) {
	q := x.quota(user)
	x.reserved.Lock()
	defer x.reserved.Unlock()
	n, _, making := x.owned(user)
	held := int(x.reserved.images[user]) // admitted, their records not made yet
	if n+held+1 > q.Images {
		return nil, quota.Exceeded(user, "images", q.Images, n+held, 1)
	}
	// Each image being made holds a conversion (a qemu-img of kilnd's, and for a
	// register a qemu-nbd of the caller's, which she may stall): a bound on them
	// bounds what one user can make kilnd run at once.
	if making+held+1 > q.ImagesInProgress {
		return nil, quota.Exceeded(user, "images being made at once", q.ImagesInProgress, making+held, 1)
	}
	return x.reserved.images.Reserve(&x.reserved, user, 1), nil
}

// AdmitStored reserves bytes of new layers for user (an estimate: what the disks or
// overlays to be captured hold), or refuses them when the layers of the snapshots the user
// owns and the bytes reserved by the user's operations in flight would pass the stored
// quota. The reservation holds until release, which the caller calls when the operation
// has ended (its snapshots, with their real sizes, are then in the store); release may be
// called more than once.
func (x *Images) AdmitStored(user string, bytes int64) (release func(), err error) {
	q := x.quota(user)
	x.reserved.Lock()
	defer x.reserved.Unlock()
	use := x.reserved.bytes[user]
	for _, sn := range append(x.store.Snapshots(), x.store.BinSnapshots(x.Now(), true)...) { // the bin's hold bytes too
		if sn.OwnerID == user {
			use += sn.StorageSize
		}
	}
	if use+bytes > int64(q.StoredMiB)<<20 {
		return nil, quota.Exceeded(user, "stored layers (MiB)", q.StoredMiB, int(quota.MiB(use)), int(quota.MiB(bytes)))
	}
	return x.reserved.bytes.Reserve(&x.reserved, user, bytes), nil
}

// Share shares the image ref names with (or unshares it from) the request's users and
// groups, and everyone for Public. The names must exist on this host.
func (x *Images) Share(c peer.Caller, ref string, req api.ShareRequest, share bool) (*images.Image, error) {
	if len(req.Users) == 0 && len(req.Groups) == 0 && !req.Public {
		return nil, fmt.Errorf("name users, groups or public (--user USER, --group GROUP, --public): %w", errdefs.ErrInvalidArgument)
	}
	if len(req.Users)+len(req.Groups) > images.MaxLaunchPermissions {
		return nil, fmt.Errorf("at most %d users and groups at once: %w", images.MaxLaunchPermissions, errdefs.ErrInvalidArgument)
	}
	if share {
		if err := peer.CheckAccounts(req.Users, req.Groups); err != nil {
			return nil, err
		}
	}
	im, err := x.Own(c, ref)
	if err != nil {
		return nil, err
	}
	if share && im.State == images.StateDisabled {
		return nil, fmt.Errorf("image %s is disabled; a disabled image cannot be shared (kiln image enable %s first): %w", im.ID, im.ID, errdefs.ErrFailedPrecondition)
	}
	if share && req.Public && !im.Public {
		if im.State != images.StateAvailable {
			return nil, fmt.Errorf("image %s is %s; only an available image can be made public: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
		}
		q := x.quota(im.OwnerID)
		if _, n, _ := x.owned(im.OwnerID); n+1 > q.PublicImages {
			return nil, quota.Exceeded(im.OwnerID, "public images", q.PublicImages, n, 1)
		}
	}
	return x.Change(c, im.ID, func(im *images.Image) error {
		if !share {
			im.LaunchPermission.Unshare(req.Users, req.Groups)
			im.Public = im.Public && !req.Public
			return nil
		}
		im.Public = im.Public || req.Public
		return im.LaunchPermission.Share(req.Users, req.Groups)
	})
}

// Change applies change to the record of an image the caller may change, and returns
// the image as it is then.
func (x *Images) Change(c peer.Caller, ref string, change func(*images.Image) error) (*images.Image, error) {
	im, err := x.Own(c, ref)
	if err != nil {
		return nil, err
	}
	return x.store.UpdateImage(im.ID, func(cur *images.Image) error {
		if cur.Bin != nil { // deregistered into the bin since it was looked up: no image now
			return fmt.Errorf("image %s: %w", im.ID, errdefs.ErrNotFound)
		}
		return change(cur)
	})
}

// ToAPI is the API's view of an image record.
func ToAPI(im *images.Image) api.Image {
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
		SSHUser:             im.SSHUser,
		Tags:                im.Tags,
		Public:              im.Public,
		CreationDate:        im.CreationDate,
		ManifestDigest:      im.Manifest.String(),
		SourceInstanceID:    im.SourceInstanceID,
		SourceImageID:       im.SourceImageID,
		CopiedFromID:        im.CopiedFromID,
		SourceRef:           im.SourceRef,
		SourceDigest:        im.SourceDigest.String(),
		TPMSupport:          im.TPMSupport,
		SecureBoot:          im.SecureBoot,
		UEFIData:            im.UEFIData.String(),
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
