package main

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"kiln/daemon/api"
)

// TestCLITags: kiln tag and untag on resources that need no guest (volumes, key pairs),
// several at once; what each prints (-q, -o json); how the arguments split into
// resources and tags or keys; --tag at creation refused when malformed; a failure on one
// resource leaves the others done; inspect and ls --filter show the tags.
func TestCLITags(t *testing.T) {
	socket := startDaemon(t)
	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := kiln(t, socket, args...)
		if code != 0 {
			t.Fatalf("kiln %s: exit %d\n%s", strings.Join(args, " "), code, errs)
		}
		return strings.TrimSpace(out)
	}
	vol := ok("volume", "create", "--size", "1G", "--tag", "Name=scratch", "-q")
	other := ok("volume", "create", "--size", "1G", "-q")
	key := ok("key-pair", "import", "k1", "--public-key", "testdata/ed25519.pub", "--tag", "env=dev", "-q")

	out := ok("tag", vol, other[:9], key, "team=web", "tier=1")
	want := vol + ": tagged team=web tier=1\n" + other + ": tagged team=web tier=1\n" + key + ": tagged team=web tier=1"
	if out != want {
		t.Errorf("kiln tag said:\n%s\nwant:\n%s", out, want)
	}
	if got := ok("untag", vol, key, "tier", "absent", "-q"); got != vol+"\n"+key {
		t.Errorf("kiln untag -q: %q; want the two ids", got)
	}
	var done []api.Volume
	if err := json.Unmarshal([]byte(ok("tag", vol, "x=", "-o", "json")), &done); err != nil || len(done) != 1 ||
		!maps.Equal(done[0].Tags, map[string]string{"Name": "scratch", "team": "web", "x": ""}) {
		t.Errorf("kiln tag -o json: %+v, %v", done, err)
	}
	if got := ok("volume", "inspect", vol); !strings.Contains(got, "Tag Name:") || !strings.Contains(got, "scratch") {
		t.Errorf("volume inspect does not show its tags:\n%s", got)
	}
	if got := ok("volume", "ls", "-q", "--filter", "tag:team=w?b", "--filter", "tag-key=tier"); got != other {
		t.Errorf("volume ls --filter tag:team=w?b --filter tag-key=tier: %q; want %s", got, other)
	}
	if got := ok("key-pair", "inspect", "k1"); !strings.Contains(got, "Tag env:") {
		t.Errorf("key-pair inspect does not show its tags:\n%s", got)
	}

	// Usage errors change nothing.
	for _, args := range [][]string{
		{"tag", vol, "team"},      // no K=V
		{"tag", "team=x", vol},    // tags first
		{"tag", "scratch", "a=b"}, // a name, not an id
		{"untag", "team", vol},    // keys first
		{"volume", "create", "--size", "1G", "--tag", "noequals"},
		{"run", "ami-0123", "--tag", "=x"},
	} {
		if code, _, errs := kiln(t, socket, args...); code != 2 {
			t.Errorf("kiln %s: exit %d (%s); want 2, a usage error", strings.Join(args, " "), code, strings.TrimSpace(errs))
		}
	}
	if n := len(strings.Fields(ok("volume", "ls", "-q"))); n != 2 {
		t.Errorf("%d volumes after the refused commands; want 2", n)
	}

	// A resource that is not there fails alone: the others are tagged.
	code, out, errs := kiln(t, socket, "tag", vol, "snap-0123456789abcdef0", key, "late=yes")
	if code != 1 || !strings.Contains(errs, api.CodeInvalidSnapshotNotFound) || !strings.Contains(out, vol+": tagged") || !strings.Contains(out, key+": tagged") {
		t.Errorf("kiln tag with a missing snapshot: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	// A reserved key is refused, with what was wrong.
	if code, _, errs := kiln(t, socket, "tag", vol, "kiln:x=1"); code != 1 || !strings.Contains(errs, api.CodeInvalidParameterValue) || !strings.Contains(errs, "reserved") {
		t.Errorf("kiln tag kiln:x=1: exit %d, %q", code, errs)
	}
}
