package daemon_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

// The real clients of the EC2 endpoint: Debian's aws CLI and python3 with boto3 (not a
// python of PATH's, which may be another with other packages).
const (
	awsCLI  = "/usr/bin/aws"
	python3 = "/usr/bin/python3"
)

// ec2Door is a kilnd answering EC2 on loopback, with the test users and their keys.
type ec2Door struct {
	t        *testing.T
	k        *kilnd
	endpoint string
	region   string
	users    map[string]*account
	keys     map[string]api.AccessKey
}

// newEC2Door starts a kilnd with --ec2-listen on a port of its choosing and makes an
// access key for each of the named users.
func newEC2Door(t *testing.T, users ...string) *ec2Door {
	t.Helper()
	for _, p := range []string{awsCLI, python3} {
		if _, err := os.Stat(p); err != nil {
			kilntest.Missing(t, "%s is missing: make deps installs awscli and python3-boto3", p)
		}
	}
	k, accts := accountsKilnd(t, "--ec2-listen", "127.0.0.1:0")
	info, err := k.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.EC2Endpoint, "http://127.0.0.1:") || info.EC2Region != "kiln-local-1" {
		t.Fatalf("kiln info: EC2 endpoint %q, region %q; want http://127.0.0.1:PORT and kiln-local-1", info.EC2Endpoint, info.EC2Region)
	}
	door := &ec2Door{t: t, k: k, endpoint: info.EC2Endpoint, region: info.EC2Region, users: accts, keys: map[string]api.AccessKey{}}
	for _, u := range users {
		var ak api.AccessKey
		if err := json.Unmarshal([]byte(accts[u].ok("access-key", "create", "-o", "json")), &ak); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ak.AccessKeyID, "AKIA") || len(ak.SecretAccessKey) != 40 || ak.OwnerID != u {
			t.Fatalf("access-key create as %s: %+v", u, ak)
		}
		door.keys[u] = ak
	}
	return door
}

// env is the environment of a client acting as user: its key, the region, no config
// files of the host's.
func (d *ec2Door) env(user string) []string {
	ak := d.keys[user]
	return []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + d.t.TempDir(), "AWS_ACCESS_KEY_ID=" + ak.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + ak.SecretAccessKey, "AWS_DEFAULT_REGION=" + d.region, "AWS_PAGER=",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"}
}

// aws runs the aws CLI as user (its key) against the endpoint and returns stdout,
// stderr and the exit status.
func (d *ec2Door) aws(user string, args ...string) (string, string, int) {
	d.t.Helper()
	return d.awsEnv(d.env(user), args...)
}

func (d *ec2Door) awsEnv(env []string, args ...string) (string, string, int) {
	d.t.Helper()
	cmd := kilntest.Command(d.t, append([]string{awsCLI, "--endpoint-url", d.endpoint, "--output", "json", "ec2"}, args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	d.t.Fatalf("aws ec2 %s: %v (deadline %s)\nstderr: %s\n%s", strings.Join(args, " "), err, kilntest.ChildDeadline, stderr.String(), d.k.Evidence())
	return "", "", -1
}

// ok runs the aws CLI as user and decodes its JSON answer into out (when not nil).
func (d *ec2Door) ok(user string, out any, args ...string) {
	d.t.Helper()
	stdout, stderr, code := d.aws(user, args...)
	if code != 0 {
		d.t.Fatalf("aws ec2 %s as %s: exit %d\n%s\n%s", strings.Join(args, " "), user, code, stderr, d.k.Evidence())
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			d.t.Fatalf("aws ec2 %s: %v\n%s", strings.Join(args, " "), err, stdout)
		}
	}
}

// wait runs an aws CLI waiter once kiln's own client saw what it waits for: the
// waiter's first poll then matches (its acceptors are checked against kiln's answer)
// instead of sleeping the CLI's fixed 15 s between polls.
func (d *ec2Door) wait(user, waiter, id string) {
	d.t.Helper()
	if waiter == "image-available" {
		if _, err := d.k.WaitImage(guestCtx(d.t), id, nil); err != nil {
			d.t.Fatal(err)
		}
	} else {
		waitState(d.t, d.k, id, strings.TrimPrefix(waiter, "instance-"))
	}
	images := waiter == "image-available"
	flag := map[bool]string{true: "--image-ids", false: "--instance-ids"}[images]
	// Each request the door answers is one line of kilnd's log with its action.
	op := `op="ec2 ` + map[bool]string{true: "DescribeImages", false: "DescribeInstances"}[images] + `"`
	polls := func() int { return strings.Count(d.k.Log.String(), op) }
	before := polls()
	d.ok(user, nil, "wait", waiter, flag, id)
	kilntest.Poll(d.t, 10*time.Second, "kilnd to log the waiter's poll", func() bool { return polls() > before }, nil)
	if n := polls() - before; n != 1 {
		d.t.Errorf("aws ec2 wait %s %s polled %d times: its first poll did not match what kiln shows", waiter, id, n)
	}
}

// refused runs the aws CLI as user and fails the test unless it exits 254 (an error
// the service answered) with code.
func (d *ec2Door) refused(user, code string, args ...string) {
	d.t.Helper()
	_, stderr, status := d.aws(user, args...)
	if status != 254 || !strings.Contains(stderr, "("+code+")") {
		d.t.Errorf("aws ec2 %s as %s: exit %d, %q; want exit 254 with %s", strings.Join(args, " "), user, status, strings.TrimSpace(stderr), code)
	}
}

type ec2Images struct {
	Images []struct {
		ImageID, Name, OwnerID, State string
		Public                        bool
		Tags                          []struct{ Key, Value string }
	}
}

type ec2Reservations struct {
	Reservations []struct {
		Instances []struct {
			InstanceID string
			ImageID    string
			State      struct {
				Code int
				Name string
			}
			Tags []struct{ Key, Value string }
		}
	}
}

func (r ec2Reservations) ids() []string {
	var out []string
	for _, res := range r.Reservations {
		for _, in := range res.Instances {
			out = append(out, in.InstanceID)
		}
	}
	return out
}

// TestEC2CLI is issue 16's acceptance with the aws CLI: real users, each with an access
// key, drive images and instances through the EC2 endpoint, with the same visibility
// and launch permissions as on the socket.
func TestEC2CLI(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	d := newEC2Door(t, "alice", "bob", "carol")
	alice := d.users["alice"]
	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "web-base", "--wait", "-q", "--tag", "team=infra"}, g.RegisterFlags()...)...)

	// Instance types: one by name, then all of them, still all there (the door reads
	// kiln's answers in process and must leave kilnd's own list as it is).
	var types struct {
		InstanceTypes []struct{ InstanceType string }
	}
	d.ok("alice", &types, "describe-instance-types", "--instance-types", "large")
	if len(types.InstanceTypes) != 1 || types.InstanceTypes[0].InstanceType != "large" {
		t.Errorf("describe-instance-types --instance-types large: %+v", types)
	}
	d.ok("alice", &types, "describe-instance-types")
	if names := fmt.Sprint(types.InstanceTypes); len(types.InstanceTypes) != 5 || !strings.Contains(names, "nano") || !strings.Contains(names, "small") {
		t.Errorf("describe-instance-types after one by name: %s; want kiln's 5 types", names)
	}

	// describe-images with filters, as alice.
	var ims ec2Images
	d.ok("alice", &ims, "describe-images", "--owners", "self", "--filters", "Name=name,Values=web-*", "Name=tag:team,Values=infra")
	if len(ims.Images) != 1 || ims.Images[0].ImageID != img || ims.Images[0].State != "available" || ims.Images[0].OwnerID != "alice" {
		t.Fatalf("describe-images: %+v; want %s, alice's, available", ims, img)
	}
	d.ok("alice", &ims, "describe-images", "--filters", "Name=name,Values=nothing-*")
	if len(ims.Images) != 0 {
		t.Errorf("describe-images name=nothing-*: %+v", ims)
	}
	d.refused("alice", "InvalidParameterValue", "describe-images", "--filters", "Name=no-such-filter,Values=x")
	d.refused("alice", "InvalidAMIID.Malformed", "describe-images", "--image-ids", "ami-nothex")

	// run-instances with user data; wait; the console shows what the user data printed.
	ud := filepath.Join(t.TempDir(), "ud.sh")
	if err := os.WriteFile(ud, []byte("#!/bin/sh\necho ec2-user-data-ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Instances []struct {
			InstanceID string
			State      struct{ Name string }
		}
	}
	d.ok("alice", &res, "run-instances", "--image-id", img, "--instance-type", "small", "--count", "1",
		"--user-data", "file://"+ud, "--tag-specifications", "ResourceType=instance,Tags=[{Key=role,Value=web}]")
	if len(res.Instances) != 1 {
		t.Fatalf("run-instances: %+v", res)
	}
	inst := res.Instances[0].InstanceID
	d.wait("alice", "instance-running", inst)
	kilntest.Poll(t, guestDeadline, "the user data's line on the console", func() bool {
		var out struct{ Output string }
		d.ok("alice", &out, "get-console-output", "--instance-id", inst, "--latest")
		return strings.Contains(out.Output, "ec2-user-data-ran")
	}, func() string { return d.k.Evidence(inst) })
	var rs ec2Reservations
	d.ok("alice", &rs, "describe-instances", "--filters", "Name=tag:role,Values=web", "Name=instance-state-name,Values=running")
	if ids := rs.ids(); len(ids) != 1 || ids[0] != inst {
		t.Errorf("describe-instances tag:role=web running: %v; want [%s]", ids, inst)
	}

	// create-tags, then create-image; wait until available.
	d.ok("alice", nil, "create-tags", "--resources", inst, img, "--tags", "Key=stage,Value=test")
	d.ok("alice", &rs, "describe-instances", "--filters", "Name=tag:stage,Values=test")
	if ids := rs.ids(); len(ids) != 1 || ids[0] != inst {
		t.Errorf("describe-instances tag:stage=test: %v; want [%s]", ids, inst)
	}
	var made struct{ ImageID string }
	d.ok("alice", &made, "create-image", "--instance-id", inst, "--name", "web-captured", "--description", "made through EC2")
	d.wait("alice", "image-available", made.ImageID)

	// Shared with bob: bob sees it and launches it; carol does not see it.
	d.ok("alice", nil, "modify-image-attribute", "--image-id", made.ImageID, "--launch-permission", "Add=[{UserId=bob}]")
	var attr struct {
		LaunchPermissions []struct{ UserID string }
	}
	d.ok("alice", &attr, "describe-image-attribute", "--image-id", made.ImageID, "--attribute", "launchPermission")
	if len(attr.LaunchPermissions) != 1 || attr.LaunchPermissions[0].UserID != "bob" {
		t.Errorf("launchPermission: %+v; want bob", attr)
	}
	d.ok("bob", &ims, "describe-images", "--image-ids", made.ImageID)
	if len(ims.Images) != 1 || ims.Images[0].OwnerID != "alice" {
		t.Errorf("bob's describe-images %s: %+v", made.ImageID, ims)
	}
	d.ok("bob", &ims, "describe-images", "--executable-users", "self", "--owners", "alice")
	if len(ims.Images) != 1 || ims.Images[0].ImageID != made.ImageID {
		t.Errorf("bob's describe-images --executable-users self --owners alice: %+v; want only %s", ims, made.ImageID)
	}
	d.refused("carol", "InvalidAMIID.NotFound", "describe-images", "--image-ids", made.ImageID)
	d.ok("carol", &ims, "describe-images", "--owners", "alice")
	if len(ims.Images) != 0 {
		t.Errorf("carol sees alice's images: %+v", ims)
	}
	d.refused("carol", "InvalidAMIID.NotFound", "run-instances", "--image-id", made.ImageID, "--count", "1")
	d.refused("bob", "UnauthorizedOperation", "modify-image-attribute", "--image-id", made.ImageID, "--launch-permission", "Add=[{UserId=carol}]")
	d.ok("bob", &res, "run-instances", "--image-id", made.ImageID, "--count", "1")
	bobs := res.Instances[0].InstanceID
	// Tags on bob's instance and alice's image at once: refused whole, nothing tagged.
	d.refused("bob", "UnauthorizedOperation", "create-tags", "--resources", bobs, made.ImageID, "--tags", "Key=mine,Value=yes")
	d.ok("bob", &rs, "describe-instances", "--filters", "Name=tag-key,Values=mine")
	if ids := rs.ids(); len(ids) != 0 {
		t.Errorf("a refused create-tags tagged %v", ids)
	}
	d.refused("alice", "InvalidInstanceID.NotFound", "terminate-instances", "--instance-ids", bobs)
	d.ok("bob", nil, "terminate-instances", "--instance-ids", bobs)

	// stop, start, terminate, each waited for.
	var changes struct {
		StoppingInstances, StartingInstances, TerminatingInstances []struct {
			InstanceID                  string
			CurrentState, PreviousState struct {
				Code int
				Name string
			}
		}
	}
	d.ok("alice", &changes, "stop-instances", "--instance-ids", inst)
	if c := changes.StoppingInstances; len(c) != 1 || c[0].PreviousState.Name != "running" || c[0].PreviousState.Code != 16 ||
		c[0].CurrentState.Name != "stopping" && c[0].CurrentState.Name != "stopped" {
		t.Errorf("stop-instances: %+v", changes)
	}
	d.wait("alice", "instance-stopped", inst)
	d.ok("alice", &changes, "start-instances", "--instance-ids", inst)
	if c := changes.StartingInstances; len(c) != 1 || c[0].PreviousState.Code != 80 {
		t.Errorf("start-instances: %+v", changes)
	}
	d.wait("alice", "instance-running", inst)
	d.ok("alice", &changes, "terminate-instances", "--instance-ids", inst)
	d.wait("alice", "instance-terminated", inst)
	d.wait("bob", "instance-terminated", bobs)
	d.ok("alice", &rs, "describe-instances", "--instance-ids", inst)
	if len(rs.Reservations) != 1 || rs.Reservations[0].Instances[0].State.Code != 48 {
		t.Errorf("describe-instances of a terminated instance: %+v; want it, terminated (48)", rs)
	}
	d.ok("alice", nil, "deregister-image", "--image-id", made.ImageID)
	d.refused("bob", "InvalidAMIID.NotFound", "describe-images", "--image-ids", made.ImageID)

	// Errors: a wrong secret, an unknown id, an action kiln does not have, DryRun.
	env := d.env("alice")
	for i, kv := range env {
		if strings.HasPrefix(kv, "AWS_SECRET_ACCESS_KEY=") {
			env[i] = "AWS_SECRET_ACCESS_KEY=" + strings.Repeat("x", 40)
		}
	}
	if _, stderr, code := d.awsEnv(env, "describe-images"); code != 254 || !strings.Contains(stderr, "(AuthFailure)") {
		t.Errorf("a wrong secret: exit %d, %q; want 254 and AuthFailure", code, stderr)
	}
	d.refused("alice", "InvalidInstanceID.NotFound", "describe-instances", "--instance-ids", "i-0123456789abcdef0")
	d.refused("alice", "InvalidAction", "describe-spot-price-history")
	d.refused("alice", "DryRunOperation", "run-instances", "--image-id", img, "--count", "1", "--dry-run")
	d.refused("carol", "InvalidAMIID.NotFound", "run-instances", "--image-id", img, "--count", "1", "--dry-run")

	// The removed key signs nothing any more.
	alice.ok("access-key", "rm", d.keys["alice"].AccessKeyID)
	if _, stderr, code := d.aws("alice", "describe-regions"); code != 254 || !strings.Contains(stderr, "(AuthFailure)") {
		t.Errorf("a removed key: exit %d, %q; want 254 and AuthFailure", code, stderr)
	}
}

// TestEC2Boto3 drives the endpoint with boto3: paging describe_images with MaxResults,
// resource objects and their waiters, ClientToken idempotency, and presigned requests
// (one works; an expired and a tampered one are refused).
func TestEC2Boto3(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	d := newEC2Door(t, "carol")
	carol := d.users["carol"]
	g := guestCopy(t)
	img := carol.ok(append([]string{"image", "register", "boto-base", "--wait", "-q"}, g.RegisterFlags()...)...)
	const copies = 7
	for i := range copies {
		carol.ok("image", "copy", img, "boto-copy-"+strconv.Itoa(i), "-q")
	}
	script, err := filepath.Abs("testdata/ec2_boto3.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := kilntest.Command(t, python3, script)
	cmd.Env = append(d.env("carol"), "KILN_EC2_ENDPOINT="+d.endpoint, "KILN_IMAGE_ID="+img, "KILN_COPIES="+strconv.Itoa(copies),
		"AWS_DATA_PATH=/usr/lib/python3/dist-packages/awscli/botocore/data")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("boto3 script (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the boto3 script failed: %v\n%s", err, d.k.Evidence())
	}
	for _, want := range []string{"paged 8 images in 2 pages", "gave one instance", "wait_until_running: running", "tag filter found", "instance_status_ok waiter",
		"presigned request worked", "tampered presigned request was refused", "expired presigned request was refused"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the boto3 script did not say %q", want)
		}
	}
}
