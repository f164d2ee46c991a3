package images

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/internal/filter"
)

func TestFilter(t *testing.T) {
	im := &Image{
		ID: "ami-0123456789abcdef0", Name: "web-prod", OwnerID: "alice", State: StateAvailable,
		Description: "the web server", Tags: map[string]string{"env": "prod", "team": "web"},
		Config: Config{Architecture: "x86_64", RootDeviceType: "ebs", BootMode: "legacy-bios", RootDeviceName: "/dev/vda",
			BlockDeviceMappings: []BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &EBS{SnapshotID: "snap-0123456789abcdef0"}}}},
	}
	for _, tc := range []struct {
		specs []string
		want  bool
	}{
		{nil, true},
		{[]string{"name=web-prod"}, true},
		{[]string{"name=web-*"}, true},
		{[]string{"name=db-*"}, false},
		{[]string{"name=db-*", "name=web-*"}, true},      // same key: OR
		{[]string{"name=web-*", "state=pending"}, false}, // different keys: AND
		{[]string{"image-id=ami-0123456789abcdef0"}, true},
		{[]string{"owner-id=alice"}, true},
		{[]string{"architecture=arm64"}, false},
		{[]string{"root-device-type=ebs"}, true},
		{[]string{"is-public=false"}, true},
		{[]string{"is-public=true"}, false},
		{[]string{"tag:env=prod"}, true},
		{[]string{"tag:env=dev"}, false},
		{[]string{"tag:missing=*"}, false},
		{[]string{"tag-key=team"}, true},
		{[]string{"tag-key=nope"}, false},
		{[]string{"description=*web*"}, true},
		{[]string{"block-device-mapping.snapshot-id=snap-0123456789abcdef0"}, true},
		{[]string{"block-device-mapping.snapshot-id=snap-1*"}, false},
		{[]string{"name="}, false},
	} {
		f, err := ParseFilter(tc.specs)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tc.specs, err)
		}
		if got := f.Match(im); got != tc.want {
			t.Errorf("filter %q: Match = %v, want %v", tc.specs, got, tc.want)
		}
	}
}

func TestParseFilterErrors(t *testing.T) {
	for _, spec := range []string{"name", "=x", "colour=red", "tag:=x", `name=a\`} {
		_, err := ParseFilter([]string{spec})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseFilter(%q) = %v, want InvalidArgument", spec, err)
		}
	}
	_, err := ParseFilter([]string{"colour=red"})
	if !strings.Contains(err.Error(), "root-device-type") {
		t.Errorf("unknown key error does not list the known keys: %v", err)
	}
}

// FuzzFilter: any filter text parses or fails cleanly, and matching never panics;
// a literal pattern always matches the value it names.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"name=web-*", "tag:env=prod", `name=a\*b`, "is-public=true", "x", "tag:=", "name=**?*"} {
		f.Add(s, "web-prod")
	}
	f.Fuzz(func(t *testing.T, spec, value string) {
		flt, err := ParseFilter([]string{spec})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ParseFilter(%q): error of class other than InvalidArgument: %v", spec, err)
			}
			return
		}
		im := &Image{Name: value, Tags: map[string]string{value: value}}
		flt.Match(im)
		if !strings.ContainsAny(value, `*?\`) && !filter.Glob(value, value) {
			t.Fatalf("literal %q does not match itself", value)
		}
	})
}
