package ids

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestFind(t *testing.T) {
	refs := []Ref{
		{ID: "ami-c0b7a1d2e3f405162", Name: "web", Owner: "bob"},
		{ID: "ami-c0b7ffd2e3f405162", Name: "kiln-guest", Owner: "alice"},
		{ID: "ami-0123456789abcdef0", Name: "ami-c0b7a1", Owner: "alice"}, // a name that looks like a prefix
		{ID: "ami-00000000000000001", Name: "web", Owner: "alice"},        // alice's own "web" wins over bob's
		{ID: "ami-00000000000000002", Name: "shared", Owner: "bob"},
		{ID: "ami-00000000000000003", Name: "shared", Owner: "carol"}, // two others': ambiguous
		{ID: "ami-00000000000000004", Name: "bobs", Owner: "bob"},
		{ID: "ami-00000000000000005", Name: "bobs", Owner: "bob"}, // one other owner's twice: the first
	}
	for _, c := range []struct {
		ref  string
		want int
		err  func(error) bool
		text string
	}{
		{ref: "ami-c0b7ffd2e3f405162", want: 1},
		{ref: "web", want: 3},
		{ref: "bobs", want: 6},
		{ref: "shared", want: -1, err: errdefs.IsInvalidArgument, text: "used by 2 owners"},
		{ref: "ami-c0b7a1", want: 2}, // the name wins over the prefix
		{ref: "ami-c0b7ff", want: 1},
		{ref: "ami-0123", want: 2},
		{ref: "ami-c0b7", want: -1, err: errdefs.IsInvalidArgument, text: "begins 2 ids"},
		{ref: "ami-c0b", want: -1, err: errdefs.IsNotFound},    // too short to be a prefix
		{ref: "ami-C0B7FF", want: -1, err: errdefs.IsNotFound}, // ids are lowercase
		{ref: "kiln-guset", want: -1, err: errdefs.IsNotFound, text: `did you mean "kiln-guest"?`},
		{ref: "wbe", want: -1, err: errdefs.IsNotFound, text: `did you mean "web"?`},
		{ref: "nothing-like-it", want: -1, err: errdefs.IsNotFound, text: `image "nothing-like-it": no image has that id or name`},
	} {
		i, err := Find("image", "ami-", c.ref, "alice", refs)
		switch {
		case c.err == nil && (err != nil || i != c.want):
			t.Errorf("Find(%q) = %d, %v; want %d", c.ref, i, err, c.want)
		case c.err != nil && (!c.err(err) || i != -1 || !strings.Contains(err.Error(), c.text)):
			t.Errorf("Find(%q) = %d, %v; want -1 and an error saying %q", c.ref, i, err, c.text)
		}
		if c.ref == "nothing-like-it" && err != nil && strings.Contains(err.Error(), "mean") {
			t.Errorf("Find(%q) suggests something: %v", c.ref, err)
		}
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"kiln-guest", "debian-12", "debian-13", "web", "db", "box"}
	for _, c := range []struct {
		ref  string
		want []string
	}{
		{"kiln-guset", []string{"kiln-guest"}},            // a transposition is one edit
		{"debain-12", []string{"debian-12", "debian-13"}}, // closest first
		{"debian-1", []string{"debian-12", "debian-13"}},
		{"bx", []string{"box"}},
		{"dx", []string{"db"}},     // short: one edit at most
		{"zzzz", []string{}},       // nothing close
		{"kiln-guest", []string{}}, // itself is no suggestion
	} {
		if got := Suggest(c.ref, names); !slices.Equal(got, c.want) {
			t.Errorf("Suggest(%q) = %q; want %q", c.ref, got, c.want)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b  string
		limit int
		want  int
	}{
		{"", "", 2, 0}, {"abc", "abc", 2, 0}, {"abc", "acb", 2, 1}, {"abc", "abd", 2, 1},
		{"abc", "ab", 2, 1}, {"abc", "", 2, 3}, {"kitten", "sitting", 5, 3}, {"kitten", "sitting", 2, 3},
		{"héllo", "hello", 2, 1},
	} {
		if got := distance(c.a, c.b, c.limit); got != c.want {
			t.Errorf("distance(%q, %q, %d) = %d; want %d", c.a, c.b, c.limit, got, c.want)
		}
	}
}
