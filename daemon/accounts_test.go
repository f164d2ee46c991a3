package daemon_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

// account is a real Unix user running the kiln CLI against a test kilnd.
type account struct {
	t      testing.TB
	name   string
	cred   *syscall.Credential
	socket string
}

// testAccounts are the users of the accounts tests and their groups besides kiln
// (which lets them use the socket).
var testAccounts = []struct {
	name   string
	groups []string
}{
	{"alice", nil}, {"bob", nil}, {"carol", []string{"devs"}}, {"dave", nil}, {"erin", []string{"kiln-admin"}},
}

// accounts makes the test users and groups (once per machine: useradd, groupadd) and
// returns them by name, talking to socket.
func accounts(t testing.TB, socket string) map[string]*account {
	t.Helper()
	if os.Geteuid() != 0 {
		kilntest.Missing(t, "the accounts tests create Unix users: run them as root")
	}
	sh := func(argv ...string) {
		if out, err := kilntest.Command(t, argv...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	for _, g := range []string{"kiln", "kiln-admin", "devs"} {
		if _, err := user.LookupGroup(g); err != nil {
			sh("groupadd", g)
		}
	}
	out := map[string]*account{}
	for _, a := range testAccounts {
		groups := strings.Join(append([]string{"kiln"}, a.groups...), ",")
		if _, err := user.Lookup(a.name); err != nil {
			sh("useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", "--groups", groups, a.name)
		} else {
			sh("usermod", "--append", "--groups", groups, a.name)
		}
		u, err := user.Lookup(a.name)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		gids, _ := u.GroupIds()
		for _, g := range gids {
			n, _ := strconv.Atoi(g)
			cred.Groups = append(cred.Groups, uint32(n))
		}
		out[a.name] = &account{t: t, name: a.name, cred: cred, socket: socket}
	}
	return out
}

// accountsKilnd starts a kilnd (with args) whose socket the test users may use, and
// returns it with them; its QEMUs are killed at the end.
func accountsKilnd(t *testing.T, args ...string) (*kilnd, map[string]*account) {
	t.Helper()
	k := kilndIn(t, publicDir(t), "debug")
	k.Args = append(k.Args, args...)
	users := accounts(t, k.Socket)
	k.Start() // after accounts: the socket's group must exist
	t.Cleanup(k.KillQEMUs)
	return k, users
}

// kiln runs the CLI as the account and returns its stdout, stderr and exit status.
func (a *account) kiln(args ...string) (string, string, int) {
	a.t.Helper()
	cmd := kilntest.Command(a.t, append([]string{kilnBin, "--socket", a.socket}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee) && ee.ExitCode() == -1: // killed: by command's deadline
		a.t.Fatalf("kiln %s as %s: %v, not done within %s\nstderr: %s", strings.Join(args, " "), a.name, err, kilntest.ChildDeadline, stderr.String())
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	a.t.Fatalf("kiln %s as %s: %v", strings.Join(args, " "), a.name, err)
	return "", "", -1
}

// ok runs the CLI as the account and fails the test unless it succeeds; it returns
// stdout, trimmed.
func (a *account) ok(args ...string) string {
	a.t.Helper()
	out, errs, code := a.kiln(args...)
	if code != 0 {
		a.t.Fatalf("kiln %s as %s: exit %d\n%s", strings.Join(args, " "), a.name, code, errs)
	}
	return strings.TrimSpace(out)
}

// refused runs the CLI as the account and fails the test unless it exits 1 with the
// API error code on stderr.
func (a *account) refused(code string, args ...string) {
	a.t.Helper()
	_, errs, status := a.kiln(args...)
	if status != 1 || !strings.Contains(errs, code) {
		a.t.Errorf("kiln %s as %s: exit %d, %q; want exit 1 with %s", strings.Join(args, " "), a.name, status, strings.TrimSpace(errs), code)
	}
}

// guestCopy copies the test guest where every user may read it.
func guestCopy(t *testing.T) kilntest.GuestImage {
	t.Helper()
	g := kilntest.GuestFiles(t)
	d := publicDir(t)
	for _, f := range []*string{&g.Disk, &g.Kernel, &g.Initrd} {
		b, err := os.ReadFile(*f)
		if err != nil {
			t.Fatal(err)
		}
		*f = filepath.Join(d, filepath.Base(*f))
		if err := os.WriteFile(*f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// TestAccounts is the acceptance: real users, a real kilnd, launch
// permissions, ownership, files a user cannot read, quotas, the audit trail.
func TestAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	d := publicDir(t) // the socket's directory
	k := kilndIn(t, d, "debug")
	users := accounts(t, k.Socket)
	alice, bob, carol, dave, erin := users["alice"], users["bob"], users["carol"], users["dave"], users["erin"]
	settings := `{"quotas": {"users": {"bob": {"runningInstances": 1}}}}`
	if err := os.WriteFile(filepath.Join(d, "kilnd.json"), []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Start() // after accounts: the socket's group must exist
	t.Cleanup(k.KillQEMUs)

	// The socket is root's and group kiln's; the store is kilnd's alone.
	st, err := os.Stat(k.Socket)
	if err != nil {
		t.Fatal(err)
	}
	kilnGroup, _ := user.LookupGroup("kiln")
	if st.Mode().Perm() != 0o660 || strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Gid)) != kilnGroup.Gid {
		t.Errorf("socket: mode %v gid %d; want 0660 and group kiln (%s)", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, kilnGroup.Gid)
	}

	// alice registers a private image: bob sees nothing of it.
	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "alices-image", "--wait", "-q"}, g.RegisterFlags()...)...)
	if !strings.HasPrefix(img, "ami-") {
		t.Fatalf("register as alice printed %q", img)
	}
	if ls := bob.ok("image", "ls", "-q"); ls != "" {
		t.Errorf("bob lists %q; alice's image is private", ls)
	}
	var info api.Info
	decodeJSON(t, bob.ok("info", "-o", "json"), &info)
	if info.Images != 0 || info.Snapshots != 0 {
		t.Errorf("bob's info counts %d images, %d snapshots; he can see none", info.Images, info.Snapshots)
	}
	for _, ref := range []string{img, "alices-image"} {
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", ref)
		bob.refused(api.CodeInvalidAMIIDNotFound, "run", ref, "--type", "nano")
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "deregister", ref)
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "share", ref, "--user", "bob")
	}
	// Short ids and suggestions come only from what the caller sees.
	for _, ref := range []string{img[:9], "alices-imag"} {
		bob.refused(api.CodeInvalidAMIIDNotFound, "image", "inspect", ref)
		if _, errs, _ := bob.kiln("image", "inspect", ref); strings.Contains(errs, "alices-image") || strings.Contains(errs, img) {
			t.Errorf("bob's miss of %q names alice's image: %q", ref, errs)
		}
	}
	if _, errs, _ := alice.kiln("image", "inspect", "alices-imag"); !strings.Contains(errs, `did you mean "alices-image"?`) {
		t.Errorf("alice's miss of alices-imag: %q; want her image suggested", errs)
	}
	// erin administers (group kiln-admin): she sees it, by its short id too.
	if got := erin.ok("image", "inspect", img, "-q"); got != img {
		t.Errorf("erin (kiln-admin) inspect: %q", got)
	}
	if got := erin.ok("image", "inspect", img[:9], "-q"); got != img {
		t.Errorf("erin (kiln-admin) inspect %s: %q", img[:9], got)
	}

	// Shared with bob: bob launches; only alice sees whom it is shared with.
	alice.ok("image", "share", img, "--user", "bob")
	var mine, his api.Image
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &mine)
	decodeJSON(t, bob.ok("image", "inspect", img, "-o", "json"), &his)
	if mine.LaunchPermission == nil || !slices.Equal(mine.LaunchPermission.Users, []string{"bob"}) {
		t.Errorf("alice sees launch permission %+v; want users [bob]", mine.LaunchPermission)
	}
	if his.LaunchPermission != nil || his.ID != img {
		t.Errorf("bob sees %+v, launch permission %+v; want the image without its launch permission", his.ID, his.LaunchPermission)
	}
	bobs := bob.ok("run", img, "--type", "nano", "-q")
	bob.refused(api.CodeUnauthorizedOperation, "image", "share", img, "--user", "dave") // he may launch it, not share it
	bob.refused(api.CodeUnauthorizedOperation, "image", "deregister", img)

	// He may copy it, as in the cloud: the copy is his, and alice sees it among the
	// copies of her image (bob does not see that list).
	bobsCopy := bob.ok("image", "copy", img, "bobs-copy", "-q")
	mine, his = api.Image{}, api.Image{}
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &mine)
	decodeJSON(t, bob.ok("image", "inspect", img, "-o", "json"), &his)
	if len(mine.Copies) != 1 || mine.Copies[0].ID != bobsCopy || mine.Copies[0].OwnerID != "bob" || his.Copies != nil {
		t.Errorf("copies: alice sees %+v, bob %+v; want alice to see bob's copy %s", mine.Copies, his.Copies, bobsCopy)
	}
	if got := alice.ok("image", "inspect", img); !strings.Contains(got, bobsCopy+" (bob)") {
		t.Errorf("alice's inspect does not name bob's copy:\n%s", got)
	}
	bob.ok("image", "deregister", bobsCopy)
	mine = api.Image{} // decoding keeps what the JSON leaves out
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &mine)
	if len(mine.Copies) != 0 {
		t.Errorf("a deregistered copy is still listed: %+v", mine.Copies)
	}

	// Unshared: bob cannot launch; his instance goes on.
	alice.ok("image", "unshare", img, "--user", "bob")
	bob.refused(api.CodeInvalidAMIIDNotFound, "run", img, "--type", "nano")
	if got := bob.ok("instance", "inspect", bobs, "-o", "json"); !strings.Contains(got, `"state": "running"`) {
		t.Errorf("bob's instance after unshare: %s", got)
	}

	// Shared with group devs: carol (in devs) launches, dave (not) cannot.
	alice.ok("image", "share", img, "--group", "devs")
	carols := carol.ok("run", img, "--type", "nano", "-q")
	dave.refused(api.CodeInvalidAMIIDNotFound, "run", img, "--type", "nano")
	alice.refused(api.CodeInvalidParameterValue, "image", "share", img, "--user", "no-such-user-here")

	// Public: dave launches.
	alice.ok("image", "share", img, "--public")
	daves := dave.ok("run", img, "--type", "nano", "-q")
	if ls := dave.ok("image", "ls", "-q", "--filter", "is-public=true"); ls != img {
		t.Errorf("dave's public images: %q", ls)
	}
	if ls := dave.ok("image", "ls", "-q", "--owner", "self"); ls != "" {
		t.Errorf("dave's own images: %q", ls)
	}

	// bob is at his quota of one running instance: refused, nothing started.
	before := len(k.instanceDirs())
	bob.refused(api.CodeQuotaExceeded, "run", img, "--type", "nano")
	_, errs, _ := bob.kiln("run", img, "--type", "nano")
	if !strings.Contains(errs, "quota of running instances is 1, 1 in use, and this needs 1 more") {
		t.Errorf("quota message %q does not give the limit (1), the use (1) and what the run needs (1)", errs)
	}
	if after := len(k.instanceDirs()); after != before {
		t.Errorf("a refused run left %d instance directories", after-before)
	}
	if ps := bob.ok("ps", "-q"); ps != bobs {
		t.Errorf("bob's instances: %q, want %s", ps, bobs)
	}

	// Everything else is its owner's: bob cannot touch alice's or carol's instances.
	alices := alice.ok("run", img, "--type", "nano", "-q")
	for _, other := range []string{alices, carols} {
		bob.refused(api.CodeInvalidInstanceNotFound, "stop", other)
		bob.refused(api.CodeInvalidInstanceNotFound, "terminate", other)
		bob.refused(api.CodeInvalidInstanceNotFound, "console", other)
		bob.refused(api.CodeInvalidInstanceNotFound, "console", other, "--attach")
		bob.refused(api.CodeInvalidInstanceNotFound, "instance", "inspect", other)
		bob.refused(api.CodeInvalidInstanceNotFound, "image", "create", other, "bobs-capture")
	}
	if ps := bob.ok("ps", "-a", "-q"); ps != bobs {
		t.Errorf("bob lists instances %q; want only his %s", ps, bobs)
	}
	ai, err := k.Instance(ctxT(t), alices)
	if err != nil {
		t.Fatal(err)
	}
	alicesVolume := ai.BlockDeviceMappings[0].VolumeID
	bob.refused(api.CodeInvalidVolumeNotFound, "volume", "rm", alicesVolume)
	bob.refused(api.CodeInvalidVolumeNotFound, "volume", "inspect", alicesVolume)
	if vols := bob.ok("volume", "ls", "-q"); strings.Contains(vols, alicesVolume) {
		t.Errorf("bob lists alice's volume: %q", vols)
	}
	// The image's snapshot: bob launched from it, he cannot delete it.
	snap := mine.BlockDeviceMappings[0].EBS.SnapshotID
	bob.refused(api.CodeInvalidSnapshotNotFound, "snapshot", "rm", snap)
	bob.refused(api.CodeInvalidSnapshotNotFound, "snapshot", "inspect", snap)

	// root and erin (kiln-admin) can.
	waitState(t, k, alices, "ready")
	if con := console(t, k, alices); !strings.Contains(con, "KILN-GUEST ready") {
		t.Errorf("root reading alice's console: %q", con)
	}
	erin.ok("stop", "--force", carols)
	erin.ok("terminate", "--force", carols)
	erin.ok("image", "create", alices, "erins-capture", "--no-reboot", "--wait", "-q")

	// bob asks to register a file he cannot read: refused, and the file is never read.
	secretDir := t.TempDir() // 0700, root's
	secret := filepath.Join(secretDir, "secret.qcow2")
	if out, err := kilntest.Command(t, "qemu-img", "create", "-q", "-f", "qcow2", secret, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(secret, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, errs, code := bob.kiln("image", "register", "stolen", "--disk", secret, "--wait")
	if code != 1 || !strings.Contains(errs, "permission denied") {
		t.Errorf("bob registering %s: exit %d, %q; want exit 1, permission denied", secret, code, errs)
	}
	if at := atime(t, secret); !at.Equal(old) {
		t.Errorf("%s was read (atime %v)", secret, at)
	}
	if _, err := k.Image(ctxT(t), "stolen"); err == nil {
		t.Error(`an image "stolen" exists`)
	}
	if b, err := os.ReadFile(secret); err == nil && len(b) > 0 && atime(t, secret).Equal(old) {
		t.Log("this filesystem does not update atime: the never-read check above shows nothing here")
	}

	// The store's files are kilnd's alone.
	filepath.WalkDir(k.Root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.Type()&fs.ModeSymlink != 0 {
			return err
		}
		if info, err := de.Info(); err == nil && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v; the store is kilnd's alone", p, info.Mode().Perm())
		}
		return nil
	})

	// The audit trail has the mutating requests: who, what, on what, with what result.
	audit := k.audit()
	for _, want := range []struct{ user, action, resource, result string }{
		{"alice", "POST /v1/images", "image=" + img, "ok"},
		{"alice", "POST /v1/images/{image}/share", "image=" + img, "ok"},
		{"alice", "POST /v1/images/{image}/unshare", "image=" + img, "ok"},
		{"bob", "POST /v1/instances", "instance=" + bobs, "ok"},
		{"bob", "POST /v1/instances", "", api.CodeQuotaExceeded},
		{"bob", "POST /v1/instances/{instance}/{action}", "instance=" + alices, api.CodeInvalidInstanceNotFound},
		{"bob", "DELETE /v1/snapshots/{snapshot}", "snapshot=" + snap, api.CodeInvalidSnapshotNotFound},
		{"erin", "POST /v1/instances/{instance}/{action}", "instance=" + carols, "ok"},
		{"dave", "POST /v1/instances", "instance=" + daves, "ok"},
	} {
		found := false
		for _, e := range audit {
			found = found || e.User == want.user && e.Action == want.action && e.Result == want.result &&
				(want.resource == "" || slices.Contains(e.Resource, want.resource))
		}
		if !found {
			t.Errorf("no audit entry %+v", want)
		}
	}
	for _, e := range audit {
		if strings.HasPrefix(e.Action, "GET ") {
			t.Errorf("audit entry for a read: %+v", e)
		}
	}
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
}

func atime(t *testing.T, p string) time.Time {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(st.Sys().(*syscall.Stat_t).Atim.Unix())
}

func (k *kilnd) instanceDirs() []string {
	ents, _ := os.ReadDir(filepath.Join(k.Root, "instances"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

type auditLine struct {
	User     string   `json:"user"`
	UID      uint32   `json:"uid"`
	Action   string   `json:"action"`
	Resource []string `json:"resource"`
	Result   string   `json:"result"`
}

func (k *kilnd) audit() []auditLine {
	k.TB.Helper()
	return readTrail(k.TB, filepath.Join(k.Root, "audit.log"))
}
