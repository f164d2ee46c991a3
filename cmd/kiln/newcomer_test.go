package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestCLINewcomer walks what a newcomer meets in the README's tour (issue 14), against a
// real kilnd: names and short ids resolve, a miss suggests the near name and hints once,
// unknown commands suggest the nearest, counts and file flags are checked and named,
// terminated instances resolve, terminate is idempotent, the small commands confirm in
// one line and every one honours -o json, and completion completes kilnd's names.
func TestCLINewcomer(t *testing.T) {
	if testing.Short() {
		t.Skip("launches instances")
	}
	socket := startDaemon(t)
	registerGuest(t, socket, "kiln-guest", kilntest.GuestCmdline)
	_, out, _ := kiln(t, socket, "image", "inspect", "kiln-guest", "-q")
	id := strings.TrimSpace(out)

	// Short ids and near names.
	if code, out, errOut := kiln(t, socket, "image", "inspect", id[:8], "-q"); code != 0 || strings.TrimSpace(out) != id {
		t.Errorf("inspect by the prefix %s: exit %d, %q, %q", id[:8], code, out, errOut)
	}
	code, _, errOut := kiln(t, socket, "image", "inspect", "kiln-guset")
	if code != 1 || !strings.Contains(errOut, `did you mean "kiln-guest"?`) || strings.Count(errOut, "kiln image ls") != 1 {
		t.Errorf("inspect kiln-guset: exit %d, stderr %q; want the suggestion and one hint", code, errOut)
	}

	// Unknown commands: exit 2, the nearest named, the command's own help.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"image", "rm", "x"}, `unknown command "rm" for "kiln image"; did you mean "deregister"?`},
		{[]string{"image", "lss"}, `did you mean "ls"?`},
		{[]string{"imgae", "ls"}, `did you mean "image"?`},
		{[]string{"volume", "delete", "vol-1"}, `did you mean "rm"?`},
	} {
		code, _, errOut := kiln(t, socket, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.says) || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("kiln %s: exit %d, stderr %q; want 2 saying %q", strings.Join(tc.args, " "), code, errOut, tc.says)
		}
	}

	// Counts and names are checked before anything is launched; file flags name themselves.
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"run", "kiln-guest", "--count", "0"}, 2, "--count 0"},
		{[]string{"run", "kiln-guest", "--count", "-2"}, 2, "--count -2"},
		{[]string{"run", "kiln-guest", "--name", "my box"}, 1, `instance name "my box"`},
		{[]string{"run", "kiln-guest", "--name", "a/b"}, 1, `instance name "a/b"`},
		{[]string{"run", "kiln-guest", "--user-data", "/nonexistent"}, 1, "--user-data: "},
		{[]string{"image", "register", "x", "--disk", "/nonexistent.qcow2"}, 1, "--disk: "},
		{[]string{"image", "register", "x", "--disk", kilntest.GuestFiles(t).Disk, "--kernel", "/nonexistent"}, 1, "--kernel: "},
		{[]string{"key-pair", "import", "k", "--public-key", "/nonexistent.pub"}, 1, "--public-key: "},
	} {
		code, _, errOut := kiln(t, socket, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.says) {
			t.Errorf("kiln %s: exit %d, stderr %q; want %d saying %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.says)
		}
	}
	if _, out, _ := kiln(t, socket, "ps", "-a", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("refused runs launched %q", out)
	}

	// A short name; a terminated instance resolves by its name while ps -a shows it, a
	// live one of the same name wins; terminate again is no error.
	code, out, errOut = kiln(t, socket, "run", "kiln-guest", "--name", "db", "--type", "nano", "-q")
	first := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(first, "i-") {
		t.Fatalf("run --name db: exit %d, %q, %q", code, out, errOut)
	}
	t.Cleanup(func() { kiln(t, socket, "terminate", "--force", first) })
	if code, _, errOut := kiln(t, socket, "terminate", "db", "--force", "--wait"); code != 0 {
		t.Fatalf("terminate db: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{{"instance", "inspect", "db", "-q"}, {"terminate", "db"}, {"terminate", first, "--wait"}} {
		if code, out, errOut := kiln(t, socket, args...); code != 0 || strings.TrimSpace(out) != first {
			t.Errorf("kiln %s with db terminated: exit %d, %q, %q; want %s", strings.Join(args, " "), code, out, errOut, first)
		}
	}
	if code, _, errOut := kiln(t, socket, "console", "db"); code != 0 {
		t.Errorf("console of the terminated db: exit %d: %s", code, errOut)
	}
	code, out, errOut = kiln(t, socket, "run", "kiln-guest", "--name", "db", "--type", "nano", "-q")
	second := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(second, "i-") {
		t.Fatalf("run --name db again: exit %d, %q, %q", code, out, errOut)
	}
	t.Cleanup(func() { kiln(t, socket, "terminate", "--force", second) })
	if _, out, _ := kiln(t, socket, "instance", "inspect", "db", "-q"); strings.TrimSpace(out) != second {
		t.Errorf("inspect db with a live db and a terminated one: %q; want the live %s", out, second)
	}
	if _, out, _ := kiln(t, socket, "instance", "inspect", second[:7], "-q"); strings.TrimSpace(out) != second {
		t.Errorf("inspect by the prefix %s: %q; want %s", second[:7], out, second)
	}

	// Completion asks kilnd for names.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "run", ""}, "kiln-guest\t" + id},
		{[]string{"__complete", "stop", ""}, "db\t" + second},
		{[]string{"__complete", "stop", "db", ""}, "db\t" + second}, // INSTANCE...: every argument
		{[]string{"__complete", "run", "kiln-guest", "--type", ""}, "nano\t1 vCPU, 256 MiB"},
		{[]string{"__complete", "image", "copy", "kiln-guest", ""}, ":4"}, // NAME: nothing of kilnd's
		{[]string{"__complete", "-o", ""}, "json"},
		{[]string{"__complete", "exec", "db", ""}, ":0"}, // COMMAND: the shell's
	} {
		code, out, errOut := kiln(t, socket, tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("kiln %q: exit %d, %q, %q; want %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if _, out, _ := kiln(t, socket, "__complete", "image", "copy", "kiln-guest", ""); strings.Contains(out, "ami-") {
		t.Errorf("completion of copy's NAME offers images: %q", out)
	}

	// Short confirmations, and the object with -o json.
	one := regexp.MustCompile(`^ami-[0-9a-f]+ \(kiln-guest\): [^\n]+\n$`)
	for _, args := range [][]string{
		{"image", "tag", "kiln-guest", "team=infra"},
		{"image", "untag", "kiln-guest", "team"},
		{"image", "share", "kiln-guest", "--user", "nobody"},
		{"image", "unshare", "kiln-guest", "--user", "nobody"},
	} {
		if code, out, errOut := kiln(t, socket, args...); code != 0 || !one.MatchString(out) {
			t.Errorf("kiln %s: exit %d, %q, %q; want one line", strings.Join(args, " "), code, out, errOut)
		}
	}
	code, out, errOut = kiln(t, socket, "image", "untag", "kiln-guest", "nosuchkey")
	if code != 0 || !strings.Contains(errOut, `had no tag "nosuchkey"`) || !strings.Contains(out, "no tag removed") {
		t.Errorf("untag nosuchkey: exit %d, %q, %q", code, out, errOut)
	}
	code, out, _ = kiln(t, socket, "image", "copy", "kiln-guest", "guest-copy")
	if code != 0 || !regexp.MustCompile(`^ami-[0-9a-f]+ \(guest-copy\): available, a copy of `+id+` \(no bytes copied: it shares its layers\)\n$`).MatchString(out) {
		t.Errorf("copy: exit %d, %q", code, out)
	}
	var im api.Image
	if code, out, _ = kiln(t, socket, "image", "tag", "guest-copy", "a=b", "-o", "json"); code != 0 || json.Unmarshal([]byte(out), &im) != nil || im.Tags["a"] != "b" {
		t.Errorf("tag -o json: exit %d, %q", code, out)
	}
	var gone []api.Deleted
	if code, out, _ = kiln(t, socket, "image", "deregister", "guest-copy", "-o", "json"); code != 0 || json.Unmarshal([]byte(out), &gone) != nil || len(gone) != 1 || gone[0].ID != im.ID {
		t.Errorf("deregister -o json: exit %d, %q; want [{\"id\": %q}]", code, out, im.ID)
	}
	pub := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(pub, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test\n"), 0o644)
	if code, _, errOut := kiln(t, socket, "key-pair", "import", "k", "--public-key", pub); code != 0 {
		t.Fatalf("key-pair import: exit %d: %s", code, errOut)
	}
	if code, out, _ = kiln(t, socket, "key-pair", "rm", "k", "-o", "json"); code != 0 || json.Unmarshal([]byte(out), &gone) != nil || len(gone) != 1 || !strings.HasPrefix(gone[0].ID, "key-") {
		t.Errorf("key-pair rm -o json: exit %d, %q", code, out)
	}
}
