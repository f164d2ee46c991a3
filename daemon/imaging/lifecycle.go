package imaging

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/images"
	"kiln/internal/ids"
)

// MaxDeprecation bounds how far ahead an image may be deprecated (EC2's 10 years).
const MaxDeprecation = 10 * 365 * 24 * time.Hour

// Listed reports whether an image goes into the caller's listing: one it sees, but
// not one deprecated by now unless includeDeprecated or it is the caller's own, nor a
// disabled one unless includeDisabled (EC2's DescribeImages).
func (x *Images) Listed(c peer.Caller, im *images.Image, includeDeprecated, includeDisabled bool) bool {
	switch {
	case !x.Visible(c, im):
		return false
	case im.State == images.StateDisabled && !includeDisabled:
		return false
	case im.Deprecated(x.Now()) && !includeDeprecated && im.OwnerID != c.User:
		return false
	}
	return true
}

// Deprecate sets (or, with req.Cancel, takes away) the deprecation time of an image the
// caller may change. The time must be in the future, at most MaxDeprecation ahead; its
// seconds are rounded to the minute, as EC2 does. A deprecated image stays launchable.
func (x *Images) Deprecate(c peer.Caller, ref string, req api.DeprecateRequest) (*images.Image, error) {
	now := x.Now()
	var at *time.Time
	switch {
	case req.Cancel && req.At != nil:
		return nil, fmt.Errorf("give a deprecation time or cancel, not both: %w", errdefs.ErrInvalidArgument)
	case req.Cancel:
	case req.At == nil:
		return nil, fmt.Errorf("give the time to deprecate the image at (--at 2030-01-01T00:00:00Z, or --at 7d from now), or cancel its deprecation (--cancel): %w", errdefs.ErrInvalidArgument)
	default:
		t := req.At.UTC().Round(time.Minute)
		if !t.After(now) {
			return nil, fmt.Errorf("deprecation time %s is not in the future (now is %s): %w", t.Format(time.RFC3339), now.UTC().Format(time.RFC3339), errdefs.ErrInvalidArgument)
		}
		if t.Sub(now) > MaxDeprecation {
			return nil, fmt.Errorf("deprecation time %s is more than 10 years ahead: %w", t.Format(time.RFC3339), errdefs.ErrInvalidArgument)
		}
		at = &t
	}
	return x.Change(c, ref, func(im *images.Image) error {
		if at != nil && im.State != images.StateAvailable && im.State != images.StateDisabled {
			return fmt.Errorf("image %s is %s; only an available or disabled image can be deprecated: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
		}
		im.DeprecationTime = at
		return nil
	})
}

// Disable disables an available image of the caller's (EC2's DisableImage): it cannot
// be launched, and it is shared with no one and private from now on.
func (x *Images) Disable(c peer.Caller, ref string) (*images.Image, error) {
	return x.Change(c, ref, func(im *images.Image) error {
		if im.State != images.StateAvailable {
			return fmt.Errorf("image %s is %s; only an available image can be disabled: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
		}
		im.State, im.Public, im.LaunchPermission = images.StateDisabled, false, images.LaunchPermission{}
		return nil
	})
}

// Enable makes a disabled image of the caller's available again (EC2's EnableImage);
// whom it was shared with before it was disabled must be given again.
func (x *Images) Enable(c peer.Caller, ref string) (*images.Image, error) {
	return x.Change(c, ref, func(im *images.Image) error {
		if im.State != images.StateDisabled {
			return fmt.Errorf("image %s is %s, not disabled: %w", im.ID, im.State, errdefs.ErrFailedPrecondition)
		}
		im.State = images.StateAvailable
		return nil
	})
}

// Protect turns deregistration protection on for an image of the caller's, with or
// without the cooldown; Unprotect turns it off (with the cooldown, it lasts
// images.ProtectionCooldown more).
func (x *Images) Protect(c peer.Caller, ref string, cooldown bool) (*images.Image, error) {
	return x.Change(c, ref, func(im *images.Image) error {
		im.Protect(cooldown)
		return nil
	})
}

// Unprotect: see Protect.
func (x *Images) Unprotect(c peer.Caller, ref string) (*images.Image, error) {
	now := x.Now()
	return x.Change(c, ref, func(im *images.Image) error {
		im.Unprotect(now)
		return nil
	})
}

// Retention says how long an owner's deregistered image with tags stays in the recycle
// bin, and whether it goes there at all (recyclebin.Rules.Retention).
type Retention func(owner string, tags map[string]string) (time.Duration, bool)

// Deregister deregisters an image of the caller's: refused while it is being made or
// protected; kept in the recycle bin when a rule of its owner's says so (and it has
// content to keep), else deleted at once.
func (x *Images) Deregister(c peer.Caller, ref string, retention Retention) (api.Deleted, error) {
	im, err := x.Own(c, ref)
	if err != nil {
		return api.Deleted{}, err
	}
	now := x.Now()
	if im.State == images.StatePending {
		return api.Deleted{}, fmt.Errorf("image %s is still being made; deregister it when it is available or failed: %w", im.ID, errdefs.ErrFailedPrecondition)
	}
	if err := im.CheckDeregister(now); err != nil {
		return api.Deleted{}, err
	}
	// Checked again with the change, under the store's lock: protection may have been
	// turned on, or the image put into the bin, since it was looked up.
	check := func(cur *images.Image) error {
		if cur.InBin() {
			return fmt.Errorf("image %s: %w", cur.ID, errdefs.ErrNotFound)
		}
		return cur.CheckDeregister(now)
	}
	if keep, ok := retention(im.OwnerID, im.Tags); ok && im.Manifest != "" {
		stay := images.BinStay{Enter: now.UTC(), Exit: now.UTC().Add(keep)}
		if _, err := x.store.BinImage(im.ID, stay, check); err != nil {
			return api.Deleted{}, err
		}
		return api.Deleted{ID: im.ID, RecycleBinExitTime: &stay.Exit}, nil
	}
	if _, err := x.store.DeleteImageIf(im.ID, check); err != nil {
		return api.Deleted{}, err
	}
	return api.Deleted{ID: im.ID}, nil
}

// Restore takes an image of the caller's (any, for an administrator) out of the recycle
// bin, by its id, its name or the start of its id: the same id, content, tags and
// launch permissions as when it was deregistered.
func (x *Images) Restore(c peer.Caller, ref string) (*images.Image, error) {
	now := x.Now()
	in := x.store.Images(func(im *images.Image) bool {
		return im.InBin() && now.Before(im.Bin.Exit) && (x.admin(c) || im.OwnerID == c.User)
	})
	im, err := ids.Pick("image in the recycle bin", images.ImagePrefix, ref, c.User, in, func(im *images.Image) ids.Ref {
		return ids.Ref{ID: im.ID, Name: im.Name, Owner: im.OwnerID}
	})
	if err != nil {
		return nil, err
	}
	// In the bin it counted for no quota of its owner's: it must fit them again, counted
	// as Admit and Share count (under the same lock as Admit).
	q := x.quota(im.OwnerID)
	x.reserved.Lock()
	defer x.reserved.Unlock()
	n, public, _ := x.owned(im.OwnerID)
	if n += int(x.reserved.images[im.OwnerID]); n+1 > q.Images {
		return nil, quota.Exceeded(im.OwnerID, "images", q.Images, n, 1)
	}
	if im.Public && public+1 > q.PublicImages {
		return nil, quota.Exceeded(im.OwnerID, "public images", q.PublicImages, public, 1)
	}
	return x.store.RestoreImage(im.ID, now)
}

// BinImages is the caller's images in the recycle bin (everyone's for an
// administrator), as the bin lists them.
func (x *Images) BinImages(c peer.Caller) []api.BinImage {
	out := []api.BinImage{}
	for _, im := range x.store.BinImages(x.Now()) {
		if x.admin(c) || im.OwnerID == c.User {
			out = append(out, api.BinImage{ID: im.ID, Name: im.Name, OwnerID: im.OwnerID, Description: im.Description,
				RecycleBinEnterTime: im.Bin.Enter, RecycleBinExitTime: im.Bin.Exit})
		}
	}
	return out
}
