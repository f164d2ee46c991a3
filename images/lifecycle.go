package images

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"
)

// StateDisabled is an image its owner disabled: it cannot be launched, copied, pushed or
// shared, and only its owner sees it (EC2's DisableImage); enabling makes it available
// again, its launch permissions gone.
const StateDisabled State = "disabled"

// ProtectionCooldown is how long deregistration protection enabled with a cooldown
// lasts once it is turned off (EC2's 24 hours).
const ProtectionCooldown = 24 * time.Hour

// Deregistration protection as EC2 shows it (DescribeImages' DeregistrationProtection).
const (
	ProtectionDisabled            = "disabled"
	ProtectionEnabled             = "enabled"
	ProtectionEnabledWithCooldown = "enabled-with-cooldown"
	// ProtectionDisabledUntil is followed by a space and the time (RFC 3339, UTC) the
	// cooldown ends.
	ProtectionDisabledUntil = "disabled-until"
)

// Lifecycle is what an image's owner set of its life besides its state: when it is
// deprecated, whether it is protected from deregistration, and, once deregistered into
// the recycle bin, its stay there.
type Lifecycle struct {
	// DeprecationTime is when the image is (or was) deprecated; nil when it is not.
	DeprecationTime *time.Time `json:"deprecationTime,omitempty"`
	// Protected: deregistration is refused. Cooldown: turning protection off leaves it
	// on until ProtectedUntil (ProtectionCooldown later).
	Protected      bool       `json:"protected,omitempty"`
	Cooldown       bool       `json:"cooldown,omitempty"`
	ProtectedUntil *time.Time `json:"protectedUntil,omitempty"`
	// Bin is set while the image (or snapshot) is in the recycle bin.
	Bin *BinStay `json:"recycleBin,omitempty"`
}

// BinStay is a deregistered image's (or deleted snapshot's) stay in the recycle bin:
// it entered at Enter and may be restored until Exit, after which the next GC deletes
// it for good.
type BinStay struct {
	Enter time.Time `json:"enterTime"`
	Exit  time.Time `json:"exitTime"`
}

// Deprecated reports whether the image is deprecated at now.
func (l Lifecycle) Deprecated(now time.Time) bool {
	return l.DeprecationTime != nil && !now.Before(*l.DeprecationTime)
}

// Protection is the deregistration protection as EC2 shows it at now.
func (l Lifecycle) Protection(now time.Time) string {
	switch {
	case l.Protected && l.Cooldown:
		return ProtectionEnabledWithCooldown
	case l.Protected:
		return ProtectionEnabled
	case l.ProtectedUntil != nil && now.Before(*l.ProtectedUntil):
		return ProtectionDisabledUntil + " " + l.ProtectedUntil.UTC().Format(time.RFC3339)
	}
	return ProtectionDisabled
}

// CheckDeregister refuses (errdefs.ErrFailedPrecondition) to deregister a protected
// image, or one whose protection's cooldown has not ended at now.
func (im *Image) CheckDeregister(now time.Time) error {
	switch {
	case im.Protected:
		return fmt.Errorf("image %s is protected from deregistration; turn it off first (kiln image unprotect %s): %w", im.ID, im.ID, errdefs.ErrFailedPrecondition)
	case im.ProtectedUntil != nil && now.Before(*im.ProtectedUntil):
		return fmt.Errorf("image %s is protected from deregistration until %s (its protection had a %s cooldown): %w",
			im.ID, im.ProtectedUntil.UTC().Format(time.RFC3339), ProtectionCooldown, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Unprotect turns deregistration protection off at now: with a cooldown, it lasts
// until ProtectionCooldown later.
func (l *Lifecycle) Unprotect(now time.Time) {
	if l.Protected && l.Cooldown {
		until := now.Add(ProtectionCooldown)
		l.ProtectedUntil = &until
	}
	l.Protected, l.Cooldown = false, false
}

// Protect turns deregistration protection on (again), with or without a cooldown.
func (l *Lifecycle) Protect(cooldown bool) {
	l.Protected, l.Cooldown, l.ProtectedUntil = true, cooldown, nil
}

// InBin reports whether the record is in the recycle bin.
func (l Lifecycle) InBin() bool { return l.Bin != nil }
