package images

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

// Limits on names, descriptions and tags, as in the cloud.
const (
	MaxNameLen        = 128
	MinNameLen        = 3
	MaxDescriptionLen = 255
	MaxTags           = 50
	MaxTagKeyLen      = 128
	MaxTagValueLen    = 256
	// ReservedTagPrefix starts the tag keys kiln sets itself; users cannot set them.
	ReservedTagPrefix = "kiln:"
)

// Id prefixes, as in the cloud.
const (
	ImagePrefix    = "ami-"
	SnapshotPrefix = "snap-"
)

// CheckName checks an image name: 3 to 128 characters among letters, digits, spaces and
// ( ) [ ] . - ' @ _ (the cloud's set without "/", which kiln refuses so a name can never
// be mistaken for a path). The error wraps errdefs.ErrInvalidArgument.
func CheckName(name string) error {
	if n := utf8.RuneCountInString(name); n < MinNameLen || n > MaxNameLen {
		return fmt.Errorf("image name %q: must be %d to %d characters long: %w", ids.Clip(name), MinNameLen, MaxNameLen, errdefs.ErrInvalidArgument)
	}
	for _, c := range name {
		if !nameRune(c) {
			return fmt.Errorf("image name %q: character %q is not allowed (use letters, digits, spaces and ( ) [ ] . - ' @ _): %w",
				ids.Clip(name), c, errdefs.ErrInvalidArgument)
		}
	}
	if strings.HasPrefix(name, ImagePrefix) && ids.IsID(ImagePrefix, name) {
		return fmt.Errorf("image name %q: looks like an image id: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

func nameRune(c rune) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.ContainsRune(" ()[].-'@_", c)
}

// CheckSSHUser checks an image's default SSH user: a Unix user name, or none.
func CheckSSHUser(u string) error {
	if u != "" && !sshUser.MatchString(u) {
		return fmt.Errorf("SSH user %q: want a Unix user name (a lowercase letter or _, then up to 31 of a-z, 0-9, _ and -): %w", u, errdefs.ErrInvalidArgument)
	}
	return nil
}

var sshUser = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// CheckDescription checks a description: at most 255 characters of printable UTF-8.
func CheckDescription(d string) error {
	if !utf8.ValidString(d) || utf8.RuneCountInString(d) > MaxDescriptionLen {
		return fmt.Errorf("description: must be valid UTF-8 of at most %d characters: %w", MaxDescriptionLen, errdefs.ErrInvalidArgument)
	}
	for _, c := range d {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("description: control character %q is not allowed: %w", c, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// CheckTags checks tags set by a user: at most 50 in all (with existing, the count the
// resource already has), keys 1 to 128 characters not starting with "kiln:", values at
// most 256 characters, all valid UTF-8.
func CheckTags(tags map[string]string, existing int) error {
	if len(tags)+existing > MaxTags {
		return fmt.Errorf("tags: at most %d per resource: %w", MaxTags, errdefs.ErrInvalidArgument)
	}
	for k, v := range tags {
		if err := CheckTagKey(k); err != nil {
			return err
		}
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxTagValueLen {
			return fmt.Errorf("tag %q: value must be valid UTF-8 of at most %d characters: %w", ids.Clip(k), MaxTagValueLen, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// MergeTags returns tags with add set on them (added or replaced), checked as CheckTags
// checks tags a user sets. tags itself is not changed.
func MergeTags(tags, add map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(tags)+len(add))
	for k, v := range tags {
		out[k] = v
	}
	for k, v := range add {
		out[k] = v
	}
	if err := CheckTags(add, len(out)-len(add)); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckTagKey checks one tag key as CheckTags does.
func CheckTagKey(k string) error {
	switch {
	case k == "" || !utf8.ValidString(k) || utf8.RuneCountInString(k) > MaxTagKeyLen:
		return fmt.Errorf("tag key %q: must be valid UTF-8 of 1 to %d characters: %w", ids.Clip(k), MaxTagKeyLen, errdefs.ErrInvalidArgument)
	case strings.HasPrefix(strings.ToLower(k), ReservedTagPrefix):
		return fmt.Errorf("tag key %q: the prefix %q is reserved for kiln: %w", ids.Clip(k), ReservedTagPrefix, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CheckFirmware checks an image's UEFI options against its boot mode: UEFI data, Secure
// Boot and a TPM need a UEFI boot mode (uefi or uefi-preferred, as EC2's NitroTPM and
// UEFI data do); the TPM is v2.0 or none.
func CheckFirmware(bootMode string, uefiData, secureBoot bool, tpmSupport string) error {
	if tpmSupport != "" && tpmSupport != TPMSupportV2 {
		return fmt.Errorf("TPM support %q: the one kiln has is %s: %w", tpmSupport, TPMSupportV2, errdefs.ErrInvalidArgument)
	}
	if UEFI(bootMode) {
		return nil
	}
	for _, c := range []struct {
		on   bool
		what string
	}{{uefiData, "UEFI data"}, {secureBoot, "Secure Boot"}, {tpmSupport != "", "a TPM"}} {
		if c.on {
			return fmt.Errorf("%s needs UEFI firmware, and the boot mode is %s: give --boot-mode uefi (or uefi-preferred): %w", c.what, bootMode, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// CheckMachine checks an image's architecture, boot mode and root device type against
// those kiln knows.
func CheckMachine(architecture, bootMode, rootDeviceType string) error {
	for _, c := range []struct {
		what, v string
		allowed []string
	}{
		{"architecture", architecture, Architectures},
		{"boot mode", bootMode, BootModes},
		{"root device type", rootDeviceType, RootDeviceTypes},
	} {
		if !slices.Contains(c.allowed, c.v) {
			return fmt.Errorf("%s %q: must be one of %s: %w", c.what, c.v, strings.Join(c.allowed, ", "), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
