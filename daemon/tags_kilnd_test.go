package daemon_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"kiln/daemon/api"
)

// TestTags: tags on every kind (images, instances, volumes, snapshots, key pairs) at
// creation, by kiln tag and kiln untag (several resources at once), the filters of
// every ls with tag:K and wildcards, an unknown filter refused, another user neither
// changing nor seeing them, an administrator changing them, all kept across a kilnd
// restart; an image's lastLaunchedTime after a launch, seen by its owner only. Real
// users run the real CLI; one short-lived instance.
func TestTags(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	k, users := accountsKilnd(t)
	alice, bob, erin := users["alice"], users["bob"], users["erin"]

	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "tagged-guest", "--wait", "-q"}, g.RegisterFlags()...)...)
	var im api.Image
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &im)
	if im.LastLaunchedTime != nil {
		t.Errorf("a new image has lastLaunchedTime %v", im.LastLaunchedTime)
	}
	snap := im.BlockDeviceMappings[0].EBS.SnapshotID

	// Tags at creation.
	inst := alice.ok("run", img, "--type", "nano", "--tag", "Name=web-1", "--tag", "env=prod", "-q")
	vol := alice.ok("volume", "create", "--size", "1G", "--tag", "Name=data-1", "--tag", "env=prod", "-q")
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(publicDir(t), "alice.pub")
	if err := os.WriteFile(pubFile, ssh.MarshalAuthorizedKey(sshPub), 0o644); err != nil {
		t.Fatal(err)
	}
	key := alice.ok("key-pair", "import", "alices-key", "--public-key", pubFile, "--tag", "env=dev", "-q")
	var in api.Instance
	var v api.Volume
	var kp api.KeyPair
	decodeJSON(t, alice.ok("instance", "inspect", inst, "-o", "json"), &in)
	decodeJSON(t, alice.ok("volume", "inspect", vol, "-o", "json"), &v)
	decodeJSON(t, alice.ok("key-pair", "inspect", key, "-o", "json"), &kp)
	if in.Tags["Name"] != "web-1" || in.Tags["env"] != "prod" || v.Tags["Name"] != "data-1" || kp.Tags["env"] != "dev" {
		t.Errorf("tags at creation: instance %v, volume %v, key pair %v", in.Tags, v.Tags, kp.Tags)
	}
	alice.refused(api.CodeInvalidParameterValue, "volume", "create", "--size", "1G", "--tag", "kiln:mine=x")

	// The launch is recorded on the image, for its owner.
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &im)
	if im.LastLaunchedTime == nil || im.LastLaunchedTime.Before(in.LaunchTime.Add(-1)) {
		t.Errorf("lastLaunchedTime %v after a launch at %v", im.LastLaunchedTime, in.LaunchTime)
	}
	if text := alice.ok("image", "inspect", img); !strings.Contains(text, "Last launched") {
		t.Errorf("image inspect does not show the last launch:\n%s", text)
	}

	// Snapshot tags at image create (a live capture: the guest runs on).
	made := alice.ok("image", "create", inst, "tagged-capture", "--no-reboot", "--snapshot-tag", "made-by=test", "--wait", "-q")
	var capture api.Image
	decodeJSON(t, alice.ok("image", "inspect", made, "-o", "json"), &capture)
	madeSnap := capture.BlockDeviceMappings[0].EBS.SnapshotID
	if got := alice.ok("snapshot", "ls", "-q", "--filter", "tag:made-by=test"); got != madeSnap {
		t.Errorf("snapshot ls --filter tag:made-by=test: %q; want the capture's snapshot %s", got, madeSnap)
	}

	// kiln tag and untag, several resources of several kinds at once, by short ids too.
	out := alice.ok("tag", inst, vol[:8], snap, key, img, "team=web", "owner=alice")
	for _, id := range []string{inst, vol, snap, key, img} {
		if !strings.Contains(out, id+": tagged owner=alice team=web") {
			t.Errorf("kiln tag does not say it tagged %s:\n%s", id, out)
		}
	}
	alice.ok("untag", inst, vol, snap, key, img, "owner")
	decodeJSON(t, alice.ok("volume", "inspect", vol, "-o", "json"), &v)
	if len(v.Tags) != 3 || v.Tags["team"] != "web" || v.Tags["owner"] != "" {
		t.Errorf("volume's tags after tag and untag: %v", v.Tags)
	}
	if _, errs, code := alice.kiln("tag", "web-1", "a=b"); code != 2 || !strings.Contains(errs, "not a resource id") {
		t.Errorf("kiln tag web-1 a=b: exit %d, %q; want a usage error", code, errs)
	}

	// Filters: tag:K with wildcards, tag-key, each kind's own names; an unknown one refused.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--filter", "tag:Name=web-?"}, inst},
		{[]string{"ps", "--filter", "tag:Name=db-*"}, ""},
		{[]string{"ps", "--filter", "tag-key=te*", "--filter", "instance-state-name=running"}, inst},
		{[]string{"ps", "--filter", "tag:env=prod", "--filter", "instance-type=micro"}, ""},
		{[]string{"volume", "ls", "--filter", "tag:env=prod", "--filter", "status=available", "--filter", "size=1"}, vol},
		{[]string{"volume", "ls", "--filter", "tag:Name=data-*", "--filter", "attachment.instance-id=i-*"}, ""},
		{[]string{"snapshot", "ls", "--filter", "tag:team=w*", "--filter", "volume-size=1"}, snap},
		{[]string{"key-pair", "ls", "--filter", "tag:env=dev", "--filter", "key-name=alices-*"}, key},
		{[]string{"key-pair", "ls", "--filter", "tag:env=prod"}, ""},
	} {
		if got := alice.ok(append(c.args, "-q")...); got != c.want {
			t.Errorf("kiln %s: %q; want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	for _, ls := range [][]string{{"ps"}, {"volume", "ls"}, {"snapshot", "ls"}, {"key-pair", "ls"}} {
		_, errs, code := alice.kiln(append(ls, "--filter", "colour=red")...)
		if code != 1 || !strings.Contains(errs, api.CodeInvalidParameterValue) || !strings.Contains(errs, "tag:KEY") {
			t.Errorf("kiln %s --filter colour=red: exit %d, %q; want InvalidParameterValue naming the known keys", strings.Join(ls, " "), code, errs)
		}
	}

	// bob can neither change nor see them; the image he may launch he may not tag.
	bob.refused(api.CodeInvalidInstanceNotFound, "tag", inst, "x=y")
	bob.refused(api.CodeInvalidVolumeNotFound, "tag", vol, "x=y")
	bob.refused(api.CodeInvalidSnapshotNotFound, "untag", snap, "team")
	bob.refused(api.CodeInvalidKeyPairNotFound, "tag", key, "x=y")
	bob.refused(api.CodeInvalidAMIIDNotFound, "tag", img, "x=y")
	for _, ls := range [][]string{{"ps"}, {"volume", "ls"}, {"snapshot", "ls"}, {"key-pair", "ls"}} {
		if got := bob.ok(append(ls, "-q", "--filter", "tag-key=*")...); got != "" {
			t.Errorf("bob's %s lists %q of alice's", strings.Join(ls, " "), got)
		}
	}
	alice.ok("image", "share", img, "--user", "bob")
	bob.refused(api.CodeUnauthorizedOperation, "tag", img, "x=y")
	var his api.Image
	decodeJSON(t, bob.ok("image", "inspect", img, "-o", "json"), &his)
	if his.LastLaunchedTime != nil || his.Tags["team"] != "web" {
		t.Errorf("bob sees lastLaunchedTime %v, tags %v of the image shared with him; want its tags, not its launches", his.LastLaunchedTime, his.Tags)
	}

	// An administrator may.
	erin.ok("tag", vol, "checked=erin")

	// Everything is kept across a restart.
	k.Restart()
	decodeJSON(t, alice.ok("instance", "inspect", inst, "-o", "json"), &in)
	decodeJSON(t, alice.ok("volume", "inspect", vol, "-o", "json"), &v)
	decodeJSON(t, alice.ok("key-pair", "inspect", key, "-o", "json"), &kp)
	var sn api.Snapshot
	decodeJSON(t, alice.ok("snapshot", "inspect", snap, "-o", "json"), &sn)
	im = api.Image{}
	decodeJSON(t, alice.ok("image", "inspect", img, "-o", "json"), &im)
	for what, tags := range map[string]map[string]string{"instance": in.Tags, "volume": v.Tags, "key pair": kp.Tags, "snapshot": sn.Tags, "image": im.Tags} {
		if _, owner := tags["owner"]; tags["team"] != "web" || owner {
			t.Errorf("%s's tags after a restart: %v", what, tags)
		}
	}
	if v.Tags["checked"] != "erin" || in.Tags["Name"] != "web-1" || im.LastLaunchedTime == nil {
		t.Errorf("after a restart: volume %v, instance %v, lastLaunchedTime %v", v.Tags, in.Tags, im.LastLaunchedTime)
	}
	alice.ok("terminate", inst, "--force", "--wait")
	if got := alice.ok("ps", "-q", "--filter", "instance-state-name=terminated", "--filter", "tag:Name=web-1"); got != inst {
		t.Errorf("ps --filter instance-state-name=terminated: %q; want %s (a state filter lists terminated ones)", got, inst)
	}
}
