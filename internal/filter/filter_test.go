package filter

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything/at all", true},
		{"web-*", "web-1", true},
		{"web-*", "db-1", false},
		{"*-prod", "web-prod", true},
		{"w?b", "web", true},
		{"w?b", "wb", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{`a\?`, "a?", true},
		{"ubuntu/*", "ubuntu/22.04", true}, // "/" is ordinary, unlike path.Match
		{"**", "x", true},
		{"é?", "éü", true},
	} {
		if got := Glob(tc.pattern, tc.s); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// thing is a kind of resource with two keys, to hold Fields to its contract.
type thing struct {
	id, state string
	tags      map[string]string
}

var thingFields = &Fields[thing]{
	Tags: func(t thing) map[string]string { return t.tags },
	Keys: map[string]func(thing) []string{
		"thing-id": func(t thing) []string { return []string{t.id} },
		"state":    func(t thing) []string { return []string{t.state} },
	},
}

func TestFields(t *testing.T) {
	x := thing{id: "t-1", state: "running", tags: map[string]string{"Name": "web-1", "env": ""}}
	for _, tc := range []struct {
		specs []string
		want  bool
	}{
		{nil, true},
		{[]string{"thing-id=t-1"}, true},
		{[]string{"state=stop*", "state=run*"}, true},      // same key: OR
		{[]string{"state=running", "thing-id=t-2"}, false}, // different keys: AND
		{[]string{"tag:Name=web-?"}, true},
		{[]string{"tag:Name=db-*"}, false},
		{[]string{"tag:env="}, true},       // a tag with an empty value
		{[]string{"tag:missing=*"}, false}, // no such tag: nothing to match
		{[]string{"tag-key=Na*"}, true},
		{[]string{"tag-key=owner"}, false},
		{[]string{`tag:Name=web\-1`}, true},
	} {
		f, err := thingFields.Parse(tc.specs)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.specs, err)
		}
		if got := f.Match(x); got != tc.want {
			t.Errorf("filter %q: Match = %v, want %v", tc.specs, got, tc.want)
		}
	}
	_, err := thingFields.Parse([]string{"colour=red"})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "known: state, tag-key, tag:KEY, thing-id") {
		t.Errorf("an unknown key: %v; want InvalidArgument naming the known keys", err)
	}
	for _, spec := range []string{"state", "=x", "tag:=x", `state=a\`} {
		if _, err := thingFields.Parse([]string{spec}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Parse(%q) = %v, want InvalidArgument", spec, err)
		}
	}
}
