package quota

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
)

// Settings are the limits on what each user may have: Default for everyone, and
// per user the limits that differ (a field given for a user replaces the default's).
// Administrators have quotas too; raise theirs by name.
type Settings struct {
	Default Limits            `json:"default,omitempty"`
	Users   map[string]Limits `json:"users,omitempty"`
}

// Limits are limits as the settings file gives them; a missing field is the
// default's.
type Limits struct {
	Images           *int `json:"images,omitempty"`           // images owned, in any state
	PublicImages     *int `json:"publicImages,omitempty"`     // of those, public ones
	RunningInstances *int `json:"runningInstances,omitempty"` // instances pending, running or stopping
	VCPUs            *int `json:"vcpus,omitempty"`            // their vCPUs
	MemoryMiB        *int `json:"memoryMiB,omitempty"`        // their memory
	Volumes          *int `json:"volumes,omitempty"`          // volumes owned, standalone or an instance's
	VolumeGiB        *int `json:"volumeGiB,omitempty"`        // their sizes (virtual, as the guest sees them)
	StoredMiB        *int `json:"storedMiB,omitempty"`        // bytes of the snapshots' layers the user owns
	ImagesInProgress *int `json:"imagesInProgress,omitempty"` // images being made (registered, created, copied) at once
}

// Quota is one user's limits, resolved.
type Quota struct {
	Images, PublicImages, RunningInstances, VCPUs, MemoryMiB, Volumes, VolumeGiB, StoredMiB int
	ImagesInProgress                                                                        int
}

// defaultQuota is shaped like the cloud's defaults, sized for one host: public images
// are few (5), images many, running instances bounded by count, vCPUs and memory;
// volumes by count and by the sum of their sizes (16 TiB, one volume of the largest
// size: volumes are thin, but a guest may fill what it is given).
var defaultQuota = Quota{Images: 1000, PublicImages: 5, RunningInstances: 20, VCPUs: 64, MemoryMiB: 128 << 10,
	Volumes: 100, VolumeGiB: 16 << 10, StoredMiB: 1 << 20, ImagesInProgress: 4}

// limit is one field of Limits beside the quota field it sets.
type limit struct {
	name string
	from *int // nil when not given
	to   *int
}

// limits pairs each of l's fields with q's.
func (l Limits) limits(q *Quota) []limit {
	return []limit{
		{"images", l.Images, &q.Images}, {"publicImages", l.PublicImages, &q.PublicImages},
		{"runningInstances", l.RunningInstances, &q.RunningInstances}, {"vcpus", l.VCPUs, &q.VCPUs},
		{"memoryMiB", l.MemoryMiB, &q.MemoryMiB}, {"volumes", l.Volumes, &q.Volumes},
		{"volumeGiB", l.VolumeGiB, &q.VolumeGiB}, {"storedMiB", l.StoredMiB, &q.StoredMiB},
		{"imagesInProgress", l.ImagesInProgress, &q.ImagesInProgress},
	}
}

func (l Limits) applyTo(q *Quota) {
	for _, f := range l.limits(q) {
		if f.from != nil {
			*f.to = *f.from
		}
	}
}

// Check refuses negative limits.
func (qs Settings) Check() error {
	all := map[string]Limits{"default": qs.Default}
	for u, l := range qs.Users {
		all["users."+u] = l
	}
	for where, l := range all {
		for _, f := range l.limits(&Quota{}) {
			if f.from != nil && *f.from < 0 {
				return fmt.Errorf("quotas.%s.%s is %d; a limit is 0 or more: %w", where, f.name, *f.from, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// Of returns the user's limits.
func (qs Settings) Of(user string) Quota {
	q := defaultQuota
	qs.Default.applyTo(&q)
	if l, ok := qs.Users[user]; ok {
		l.applyTo(&q)
	}
	return q
}

// quotaError is a request that would take a user's use of a resource past its quota. It
// is of errdefs' ResourceExhausted class; daemon/api tells it apart by its Quota method.
type quotaError struct {
	user, what        string
	limit, use, asked int
}

// Exceeded is the error of a request that needs asked more of what, of which user
// has limit and uses use.
func Exceeded(user, what string, limit, use, asked int) error {
	return &quotaError{user: user, what: what, limit: limit, use: use, asked: asked}
}

func (e *quotaError) Error() string {
	return fmt.Sprintf("%s's quota of %s is %d, %d in use, and this needs %d more; stop or remove some, or ask an administrator to raise it (quotas in the settings file)",
		e.user, e.what, e.limit, e.use, e.asked)
}

func (e *quotaError) Unwrap() error { return errdefs.ErrResourceExhausted }

// Quota gives the limit, the use and what was asked.
func (e *quotaError) Quota() (limit, use, asked int) { return e.limit, e.use, e.asked }

// Reservation counts, per user, what was admitted and is not yet in the records it will
// be counted from (an image being registered, the volumes of a launch, the layers of a
// capture), so that concurrent requests cannot pass a quota on the same use. The lock
// that guards it is the caller's.
type Reservation map[string]int64

// Reserve adds n for user, under mu (which the caller holds), and returns the release
// that takes it back under mu, once however often it is called.
func (r *Reservation) Reserve(mu sync.Locker, user string, n int64) (release func()) {
	if *r == nil {
		*r = Reservation{}
	}
	(*r)[user] += n
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			defer mu.Unlock()
			if (*r)[user] -= n; (*r)[user] == 0 {
				delete(*r, user)
			}
		})
	}
}

// MiB is n bytes in MiB, rounded up.
func MiB(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// Allocated is what a file takes on disk (a sparse file's holes are free), the estimate
// of the layer made of it.
func Allocated(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return min(sys.Blocks*512, st.Size())
	}
	return st.Size()
}
