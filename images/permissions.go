package images

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
)

// LaunchPermission says who besides its owner may launch an image, as the cloud's
// launch permissions do: named accounts (here Unix users) and groups (Unix groups).
// Image.Public says everyone may.
type LaunchPermission struct {
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// MaxLaunchPermissions bounds the users and groups an image names.
const MaxLaunchPermissions = 100

// CanLaunch reports whether user, a member of groups, may see and launch the image:
// its owner, a user or a member of a group it is shared with, or anyone when public.
func (im *Image) CanLaunch(user string, groups []string) bool {
	if im.Public || im.OwnerID == user || slices.Contains(im.LaunchPermission.Users, user) {
		return true
	}
	for _, g := range groups {
		if slices.Contains(im.LaunchPermission.Groups, g) {
			return true
		}
	}
	return false
}

// Share adds users and groups to the image's launch permission; Unshare removes them.
// Names already there (or not there) are left as they are.
func (lp *LaunchPermission) Share(users, groups []string) error {
	for _, u := range users {
		if !slices.Contains(lp.Users, u) {
			lp.Users = append(lp.Users, u)
		}
	}
	for _, g := range groups {
		if !slices.Contains(lp.Groups, g) {
			lp.Groups = append(lp.Groups, g)
		}
	}
	if n := len(lp.Users) + len(lp.Groups); n > MaxLaunchPermissions {
		return fmt.Errorf("an image is shared with at most %d users and groups (%d asked); share with a group instead: %w",
			MaxLaunchPermissions, n, errdefs.ErrInvalidArgument)
	}
	slices.Sort(lp.Users)
	slices.Sort(lp.Groups)
	return nil
}

// Unshare removes users and groups from the launch permission.
func (lp *LaunchPermission) Unshare(users, groups []string) {
	lp.Users = slices.DeleteFunc(lp.Users, func(u string) bool { return slices.Contains(users, u) })
	lp.Groups = slices.DeleteFunc(lp.Groups, func(g string) bool { return slices.Contains(groups, g) })
}

func (lp LaunchPermission) clone() LaunchPermission {
	return LaunchPermission{Users: slices.Clone(lp.Users), Groups: slices.Clone(lp.Groups)}
}
