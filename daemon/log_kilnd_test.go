package daemon_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

var (
	// emptyField is a field of a text log line with nothing after its "=".
	emptyField = regexp.MustCompile(`(^|\s)[A-Za-z_][\w.-]*=(""|\s|$)`)
	// spacedArrow is an arrow with a blank before it: a message made of a state that
	// was empty ("instance  → pending").
	spacedArrow = regexp.MustCompile(`\s\s→`)
)

// TestKilndLogIsClean: kilnd's log at its default level, from a first start on a fresh
// root (the accelerator probed, as for a user) through an instance's life to its stop,
// holds no warning of containerd's that is no news (fsverity), no field without a value
// and no transition of an empty state: an instance's states are logged as "instance
// STATE" with the state it left. The instance part (a QEMU booting a blank disk, under
// TCG or KVM) is left out by -short.
func TestKilndLogIsClean(t *testing.T) {
	k := kilndIn(t, shortDir(t), "") // --log-level left out: info
	k.Accel = ""                     // probed, as a first start does
	k.Start()
	t.Cleanup(k.KillQEMUs)

	var want []string
	if !testing.Short() {
		kilntest.Need(t, "qemu-img")
		disk := filepath.Join(t.TempDir(), "blank.qcow2")
		if out, err := kilntest.Command(t, "qemu-img", "create", "-q", "-f", "qcow2", disk, "64M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, out)
		}
		ctx := guestCtx(t)
		im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "blank", Disks: []api.Disk{{Name: disk, Format: "qcow2"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.WaitImage(ctx, im.ID, nil); err != nil {
			t.Fatalf("register: %v\n%s", err, kilntest.Tail(k.Log.String(), 20))
		}
		inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
		waitState(t, k, inst.ID, "running")
		if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
			t.Fatal(err)
		}
		waitState(t, k, inst.ID, "terminated")
		want = []string{
			`msg="instance pending" instance=` + inst.ID,
			`msg="instance running" from=pending instance=` + inst.ID,
			`msg="instance shutting-down" from=running instance=` + inst.ID + ` reason=`,
			`msg="instance terminated" from=shutting-down instance=` + inst.ID + ` reason=`,
		}
	}
	k.Stop()

	text := k.Log.String()
	want = append(want, `msg="kilnd serving"`, `msg="kilnd stopping"`)
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("kilnd's log has no %q", w)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.Contains(line, "fsverity") {
			t.Errorf("containerd's fsverity notice is not Debug: %s", line)
		}
		if emptyField.MatchString(line) {
			t.Errorf("a field without a value (%q): %s", strings.TrimSpace(emptyField.FindString(line)), line)
		}
		if spacedArrow.MatchString(line) {
			t.Errorf("a transition of an empty state: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("kilnd's log:\n%s", text)
	}
}

// TestLogChecks: the checks of TestKilndLogIsClean find what they look for.
func TestLogChecks(t *testing.T) {
	for _, tc := range []struct {
		line        string
		empty, arrw bool
	}{
		{`time="…" level=info msg="instance  → pending" instance=i-0123456789abcdef0 reason=`, true, true},
		{`level=info msg="x" reason= instance=i-0123456789abcdef0`, true, false},
		{`level=info msg="x" reason="" instance=i-0123456789abcdef0`, true, false},
		{`level=info msg="instance pending" instance=i-0123456789abcdef0`, false, false},
		{`level=info msg="guests' network" network="outbound and metadata (gateway 169.254.169.254:80 → 127.0.0.1:617)"`, false, false},
	} {
		if got := emptyField.MatchString(tc.line); got != tc.empty {
			t.Errorf("empty field in %s: %v, want %v", tc.line, got, tc.empty)
		}
		if got := spacedArrow.MatchString(tc.line); got != tc.arrw {
			t.Errorf("spaced arrow in %s: %v, want %v", tc.line, got, tc.arrw)
		}
	}
}
