package ids

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// idDigits is the number of lowercase hex digits after an id's prefix.
const idDigits = 17

// NewID returns a fresh random id with the given prefix: the prefix and 17 lowercase
// hex digits, like ami-0123456789abcdef0.
func NewID(prefix string) string {
	var b [9]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + hex.EncodeToString(b[:])[:idDigits]
}

// IsID reports whether s is a well-formed id with the given prefix.
func IsID(prefix, s string) bool {
	hexPart, ok := strings.CutPrefix(s, prefix)
	if !ok || len(hexPart) != idDigits {
		return false
	}
	for _, c := range hexPart {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckID returns an error wrapping errdefs.ErrInvalidArgument when s is not a
// well-formed id with the given prefix.
func CheckID(prefix, s string) error {
	if !IsID(prefix, s) {
		return fmt.Errorf("%q is not a %s id (%s followed by %d lowercase hex digits): %w",
			s, strings.TrimSuffix(prefix, "-"), prefix, idDigits, errdefs.ErrInvalidArgument)
	}
	return nil
}
