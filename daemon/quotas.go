package daemon

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
)

// QuotaSettings are the limits on what each user may have: Default for everyone, and
// per user the limits that differ (a field given for a user replaces the default's).
// Administrators have quotas too; raise theirs by name.
type QuotaSettings struct {
	Default QuotaLimits            `json:"default,omitempty"`
	Users   map[string]QuotaLimits `json:"users,omitempty"`
}

// QuotaLimits are limits as the settings file gives them; a missing field is the
// default's.
type QuotaLimits struct {
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

// quota is one user's limits, resolved.
type quota struct {
	Images, PublicImages, RunningInstances, VCPUs, MemoryMiB, Volumes, VolumeGiB, StoredMiB int
	ImagesInProgress                                                                        int
}

// defaultQuota is shaped like the cloud's defaults, sized for one host: public images
// are few (5), images many, running instances bounded by count, vCPUs and memory;
// volumes by count and by the sum of their sizes (16 TiB, one volume of the largest
// size: volumes are thin, but a guest may fill what it is given).
var defaultQuota = quota{Images: 1000, PublicImages: 5, RunningInstances: 20, VCPUs: 64, MemoryMiB: 128 << 10,
	Volumes: 100, VolumeGiB: 16 << 10, StoredMiB: 1 << 20, ImagesInProgress: 4}

// limit is one field of QuotaLimits beside the quota field it sets.
type limit struct {
	name string
	from *int // nil when not given
	to   *int
}

// limits pairs each of l's fields with q's.
func (l QuotaLimits) limits(q *quota) []limit {
	return []limit{
		{"images", l.Images, &q.Images}, {"publicImages", l.PublicImages, &q.PublicImages},
		{"runningInstances", l.RunningInstances, &q.RunningInstances}, {"vcpus", l.VCPUs, &q.VCPUs},
		{"memoryMiB", l.MemoryMiB, &q.MemoryMiB}, {"volumes", l.Volumes, &q.Volumes},
		{"volumeGiB", l.VolumeGiB, &q.VolumeGiB}, {"storedMiB", l.StoredMiB, &q.StoredMiB},
		{"imagesInProgress", l.ImagesInProgress, &q.ImagesInProgress},
	}
}

func (l QuotaLimits) applyTo(q *quota) {
	for _, f := range l.limits(q) {
		if f.from != nil {
			*f.to = *f.from
		}
	}
}

// check refuses negative limits.
func (qs QuotaSettings) check() error {
	all := map[string]QuotaLimits{"default": qs.Default}
	for u, l := range qs.Users {
		all["users."+u] = l
	}
	for where, l := range all {
		for _, f := range l.limits(&quota{}) {
			if f.from != nil && *f.from < 0 {
				return fmt.Errorf("quotas.%s.%s is %d; a limit is 0 or more: %w", where, f.name, *f.from, errdefs.ErrInvalidArgument)
			}
		}
	}
	return nil
}

// of returns the user's limits.
func (qs QuotaSettings) of(user string) quota {
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

func quotaExceeded(user, what string, limit, use, asked int) error {
	return &quotaError{user: user, what: what, limit: limit, use: use, asked: asked}
}

func (e *quotaError) Error() string {
	return fmt.Sprintf("%s's quota of %s is %d, %d in use, and this needs %d more; stop or remove some, or ask an administrator to raise it (quotas in the settings file)",
		e.user, e.what, e.limit, e.use, e.asked)
}

func (e *quotaError) Unwrap() error { return errdefs.ErrResourceExhausted }

// Quota gives the limit, the use and what was asked.
func (e *quotaError) Quota() (limit, use, asked int) { return e.limit, e.use, e.asked }

// usage is what a user's instances hold.
type usage struct{ instances, cpus, memoryMiB int }

// admitLocked refuses n more instances of cpus and memory each when they would
// take the owner past a quota. The caller holds m.mu.
func (m *instances) admitLocked(q quota, owner string, n, cpus, mem int) error {
	var u usage
	for _, inst := range m.all {
		r := inst.rec
		if r.OwnerID != owner {
			continue
		}
		switch r.State {
		case statePending, stateRunning, stateStopping, "": // "" is reserved, being launched
			u.instances++
			u.cpus += r.CPUs
			u.memoryMiB += r.MemoryMiB
		}
	}
	switch {
	case u.instances+n > q.RunningInstances:
		return quotaExceeded(owner, "running instances", q.RunningInstances, u.instances, n)
	case u.cpus+n*cpus > q.VCPUs:
		return quotaExceeded(owner, "vCPUs", q.VCPUs, u.cpus, n*cpus)
	case u.memoryMiB+n*mem > q.MemoryMiB:
		return quotaExceeded(owner, "memory (MiB)", q.MemoryMiB, u.memoryMiB, n*mem)
	}
	return nil
}

// reservation counts, per user, what was admitted and is not yet in the records it will
// be counted from (an image being registered, the volumes of a launch, the layers of a
// capture), so that concurrent requests cannot pass a quota on the same use. The lock
// that guards it is the caller's.
type reservation map[string]int64

// reserve adds n for user, under mu (which the caller holds), and returns the release
// that takes it back under mu, once however often it is called.
func (r *reservation) reserve(mu sync.Locker, user string, n int64) (release func()) {
	if *r == nil {
		*r = reservation{}
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

// admitVolumes reserves n volumes of gib GiB in all for owner, or refuses them when
// they would take the owner past a volume quota. Volumes in the records and those
// reserved count. The reservation holds until release, which the caller calls once the
// volumes' records are in m.vols (or their making failed); release may be called more
// than once. m.mu must not be held.
func (m *instances) admitVolumes(q quota, owner string, n, gib int64) (release func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	useN, useGiB := m.volsReserved[owner], m.volGiBReserved[owner]
	for _, v := range m.vols {
		if v.OwnerID == owner {
			useN++
			useGiB += v.SizeGiB
		}
	}
	switch {
	case useN+n > int64(q.Volumes):
		return nil, quotaExceeded(owner, "volumes", q.Volumes, int(useN), int(n))
	case useGiB+gib > int64(q.VolumeGiB):
		return nil, quotaExceeded(owner, "volume size (GiB)", q.VolumeGiB, int(useGiB), int(gib))
	}
	releaseN, releaseGiB := m.volsReserved.reserve(&m.mu, owner, n), m.volGiBReserved.reserve(&m.mu, owner, gib)
	return func() { releaseN(); releaseGiB() }, nil
}

// admitStored reserves bytes of new layers for user (an estimate: what the disks or
// overlays to be captured hold), or refuses them when the layers of the snapshots the user
// owns and the bytes reserved by the user's operations in flight would pass the stored
// quota. The reservation holds until release, which the caller calls when the operation
// has ended (its snapshots, with their real sizes, are then in the store); release may be
// called more than once.
func (s *server) admitStored(user string, bytes int64) (release func(), err error) {
	q := s.settings.Load().Quotas.of(user)
	s.reserved.Lock()
	defer s.reserved.Unlock()
	use := s.reserved.bytes[user]
	for _, sn := range s.store.Snapshots() {
		if sn.OwnerID == user {
			use += sn.StorageSize
		}
	}
	if use+bytes > int64(q.StoredMiB)<<20 {
		return nil, quotaExceeded(user, "stored layers (MiB)", q.StoredMiB, int(mib(use)), int(mib(bytes)))
	}
	return s.reserved.bytes.reserve(&s.reserved, user, bytes), nil
}

// mib is n bytes in MiB, rounded up.
func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// allocated is what a file takes on disk (a sparse file's holes are free), the estimate
// of the layer made of it.
func allocated(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return min(sys.Blocks*512, st.Size())
	}
	return st.Size()
}
