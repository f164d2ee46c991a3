package record

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

// MaxNameLen bounds an instance's name.
const MaxNameLen = 128

// CheckName checks an instance's name: 1 to MaxNameLen letters, digits, '.', '-' and '_',
// beginning with a letter or a digit (as a container's name), and not an instance id. A
// name never holds a space or a '/', so that it is one word in a listing and in a shell,
// and never a path.
func CheckName(name string) error {
	bad := len(name) == 0 || len(name) > MaxNameLen
	for i, c := range name {
		word := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !word && (i == 0 || !strings.ContainsRune(".-_", c)) {
			bad = true
		}
	}
	switch {
	case bad:
		return fmt.Errorf("instance name %q: use 1 to %d letters, digits, '.', '-' and '_', beginning with a letter or a digit: %w",
			clip(name), MaxNameLen, errdefs.ErrInvalidArgument)
	case ids.IsID(InstancePrefix, name):
		return fmt.Errorf("instance name %q looks like an instance id; choose another: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// clip shortens a name quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
