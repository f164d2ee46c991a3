package ids

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// CheckWord checks a name that must stay one word in a listing, a shell and a file name:
// 1 to max letters, digits and the runes of punct, beginning with a letter or a digit,
// and never an id of prefix. what names it in the error ("instance name").
func CheckWord(what, name string, max int, punct, prefix string) error {
	bad := len(name) == 0 || len(name) > max
	for i, c := range name {
		word := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !word && (i == 0 || !strings.ContainsRune(punct, c)) {
			bad = true
		}
	}
	switch {
	case bad:
		return fmt.Errorf("%s %q: use 1 to %d letters, digits and %q, beginning with a letter or a digit: %w",
			what, Clip(name), max, punct, errdefs.ErrInvalidArgument)
	case IsID(prefix, name):
		return fmt.Errorf("%s %q looks like an id (%s…); choose another: %w", what, name, prefix, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Clip shortens outside input quoted in an error message.
func Clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
