package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

// guestKilnd starts kilnd with the test guest registered.
func guestKilnd(t *testing.T) (*kilnd, api.Image) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots guests")
	}
	k := newKilnd(t)
	t.Cleanup(k.KillQEMUs)
	return k, registerGuest(t, k, "kiln-guest")
}

func runOne(t *testing.T, k *kilnd, req api.RunInstancesRequest) api.Instance {
	t.Helper()
	insts, err := k.RunInstances(ctxT(t), req)
	if err != nil || len(insts) != 1 {
		t.Fatalf("run: %v, %v", insts, err)
	}
	return insts[0]
}

// waitState waits at most guestDeadline for the instance to be in state want (or
// "ready"); on failure it shows the state it got to, its console and QEMU's log.
func waitState(t *testing.T, k *kilnd, id, want string) api.Instance {
	t.Helper()
	start := time.Now()
	inst, err := k.WaitInstance(guestCtx(t), id, want)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cur, err := k.Instance(ctx, id); err == nil { // how far it got
			inst = cur
		}
		t.Fatalf("wait %s %s: %v after %s (state %q, ready %v, reason %q)\n%s",
			id, want, err, time.Since(start).Round(time.Second), inst.State, inst.Ready, inst.StateReason, k.Evidence(id))
	}
	return inst
}

// waitConsole waits at most guestDeadline for the instance's console (read through
// kilnd) to hold want n times; on failure it shows the console's tail, QEMU's log and
// kilnd's.
func waitConsole(t *testing.T, k *kilnd, id, want string, n int) string {
	t.Helper()
	return kilntest.Console{
		Read:     func() (string, error) { return k.ConsoleText(ctxT(t), id) },
		Evidence: func() string { return k.Evidence(id) },
	}.Wait(t, want, n)
}

func console(t *testing.T, k *kilnd, id string) string {
	t.Helper()
	s, err := k.ConsoleText(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRunStopStart(t *testing.T) {
	k, im := guestKilnd(t)
	ctx := ctxT(t)
	a := runOne(t, k, api.RunInstancesRequest{Image: "kiln-guest", Name: "gen7", InstanceType: "nano",
		UserData: []byte("#!/bin/sh\necho 7 > /etc/kiln-gen\n")})
	b := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
	if a.State != "running" || a.ImageID != im.ID || len(a.BlockDeviceMappings) != 1 || !strings.HasPrefix(a.BlockDeviceMappings[0].VolumeID, "vol-") {
		t.Fatalf("launched: %+v", a)
	}
	waitState(t, k, a.ID, "ready")
	waitState(t, k, b.ID, "ready")
	if con := console(t, k, a.ID); !strings.Contains(con, "KILN-GUEST user-data exit=0") || !strings.Contains(con, "KILN-GUEST boot gen=0") {
		t.Errorf("first boot console:\n%s", con)
	}

	if _, err := k.InstanceAction(ctx, "gen7", "stop", false); err != nil {
		t.Fatal(err)
	}
	stopped := waitState(t, k, a.ID, "stopped")
	if stopped.PID != 0 || !strings.Contains(console(t, k, a.ID), "KILN-GUEST poweroff") {
		t.Errorf("stopped: %+v (the guest should have powered off cleanly)", stopped)
	}
	if _, err := k.InstanceAction(ctx, a.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, a.ID, "ready")
	// Both are idempotent, as kiln-instance@.service needs: start of a running one and
	// stop of a stopped one succeed and change nothing.
	if again, err := k.InstanceAction(ctx, a.ID, "start", false); err != nil || again.State != "running" {
		t.Errorf("start of a running instance: %+v, %v", again, err)
	}
	if con := console(t, k, a.ID); !strings.Contains(con, "KILN-GUEST boot gen=7") {
		t.Errorf("after stop and start, the data is gone:\n%s", con)
	}
	if con := console(t, k, b.ID); !strings.Contains(con, "KILN-GUEST boot gen=0") || strings.Contains(con, "gen=7") {
		t.Errorf("the second instance sees the first's data:\n%s", con)
	}

	// reboot: a reset; the guest boots again.
	if _, err := k.InstanceAction(ctx, b.ID, "reboot", false); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, k, b.ID, "KILN-GUEST ready", 2)

	// terminate: the volume goes, the record stays visible (ps -a) as terminated.
	vol := filepath.Join(k.Root, "instances", b.ID, b.BlockDeviceMappings[0].VolumeID+".qcow2")
	if _, err := os.Stat(vol); err != nil {
		t.Fatalf("volume file: %v", err)
	}
	if _, err := k.InstanceAction(ctx, b.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, b.ID, "terminated")
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Errorf("the terminated instance's volume is still there: %v", err)
	}
	if list, _ := k.Instances(ctx, false); len(list) != 1 || list[0].ID != a.ID {
		t.Errorf("ps: %+v", list)
	}
	if list, _ := k.Instances(ctx, true); len(list) != 2 {
		t.Errorf("ps -a: %d instances", len(list))
	}
	if _, err := k.InstanceAction(ctx, b.ID, "stop", false); !isCode(err, api.CodeIncorrectState) {
		t.Errorf("stop of a terminated instance: %v", err)
	}
	info, _ := k.Info(ctx)
	if info.Instances != 1 {
		t.Errorf("info counts %d instances", info.Instances)
	}

	// Every state change of the first instance is in the event log, in order.
	k.Stop()
	got := instanceStates(t, k.Root, a.ID)
	want := "pending running stopping stopped pending running"
	if strings.Join(got, " ") != want {
		t.Errorf("events of %s:\n got %s\nwant %s", a.ID, strings.Join(got, " "), want)
	}
}

func TestFiveAtOnce(t *testing.T) {
	k, _ := guestKilnd(t)
	ctx := ctxT(t)
	before := k.blobs()
	insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: "kiln-guest", Name: "many", InstanceType: "nano", Count: 5})
	if err != nil || len(insts) != 5 {
		t.Fatalf("run --count 5: %d, %v", len(insts), err)
	}
	for i, inst := range insts {
		if inst.Name != "many-"+strconv.Itoa(i+1) {
			t.Errorf("name %q", inst.Name)
		}
	}
	uids := map[string]string{} // launched together, each QEMU runs as a user of its own
	for _, inst := range insts {
		inst = waitState(t, k, inst.ID, "ready")
		status, _ := os.ReadFile("/proc/" + strconv.Itoa(inst.PID) + "/status")
		m := regexp.MustCompile(`Uid:\s+(\d+)`).FindStringSubmatch(string(status))
		if m == nil || uids[m[1]] != "" {
			t.Errorf("QEMU of %s: %q, the uid of another's (%v)", inst.ID, m, uids)
			continue
		}
		uids[m[1]] = inst.ID
	}
	after := k.blobs()
	if len(after) != len(before) || total(after) != total(before) {
		t.Errorf("launching five instances changed the store: %d → %d blobs, %d → %d bytes", len(before), len(after), total(before), total(after))
	}
	for _, inst := range insts {
		if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
			t.Error(err)
		}
	}
}

// TestRestart: kilnd killed with SIGKILL and restarted while two instances run; one
// QEMU killed meanwhile. The other is still running and stoppable; the killed one is
// stopped with a reason.
func TestRestart(t *testing.T) {
	k, _ := guestKilnd(t)
	ctx := ctxT(t)
	insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: "kiln-guest", Name: "r", InstanceType: "nano", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		waitState(t, k, inst.ID, "ready")
	}
	k.Kill()
	for _, inst := range insts {
		if !kilntest.QEMUAlive(inst.PID) {
			t.Fatalf("QEMU %d of %s died with kilnd", inst.PID, inst.ID)
		}
	}
	syscall.Kill(insts[1].PID, syscall.SIGKILL)
	kilntest.Poll(t, 10*time.Second, "the killed QEMU gone", func() bool { return !kilntest.QEMUAlive(insts[1].PID) }, nil)
	k.Start()

	alive, err := k.Instance(ctx, insts[0].ID)
	if err != nil || alive.State != "running" || alive.PID != insts[0].PID {
		t.Errorf("surviving instance after restart: %+v, %v", alive, err)
	}
	dead, err := k.Instance(ctx, insts[1].ID)
	if err != nil || dead.State != "stopped" || !strings.Contains(dead.StateReason, "gone") {
		t.Errorf("killed instance after restart: %+v, %v", dead, err)
	}
	if _, err := k.InstanceAction(ctx, alive.ID, "stop", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, alive.ID, "stopped")
	if kilntest.QEMUAlive(alive.PID) {
		t.Error("QEMU still runs after stop")
	}
	// The one whose QEMU was killed starts again with its data.
	if _, err := k.InstanceAction(ctx, dead.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, dead.ID, "ready")
}

// TestDeregisterWhileRunning: deregister the image and gc while an instance runs; it
// keeps running, and reboot and stop/start still work.
func TestDeregisterWhileRunning(t *testing.T) {
	k, im := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
	waitState(t, k, inst.ID, "ready")
	if _, err := k.DeregisterImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	res, err := k.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsRemoved != 2 { // the config and the manifest; the layer and boot files are in use
		t.Errorf("gc removed %d blobs; want 2 (config and manifest)", res.BlobsRemoved)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "reboot", false); err != nil {
		t.Fatal(err)
	}
	// The reboot really happened: the guest booted a second time, on the layer gc kept.
	waitConsole(t, k, inst.ID, "KILN-GUEST ready", 2)
	if got, err := k.Instance(ctx, inst.ID); err != nil || got.State != "running" || got.PID != inst.PID {
		t.Errorf("after the reboot: %+v, %v; want the same QEMU running", got, err)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "stop", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "stopped")
	if _, err := k.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "ready")
	// Terminated, nothing needs the layer any more.
	if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "terminated")
	if _, err := k.GC(ctx); err != nil || len(k.blobs()) != 0 {
		t.Errorf("gc after terminate: %v, %d blobs left", err, len(k.blobs()))
	}
}

func TestRunRefusals(t *testing.T) {
	k, im := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, Name: "taken", InstanceType: "nano"})
	dirs := func() int { d, _ := os.ReadDir(filepath.Join(k.Root, "instances")); return len(d) }
	before := dirs()
	zero, many := 0, 1000
	for _, tc := range []struct {
		name string
		req  api.RunInstancesRequest
		code string
		says string
	}{
		{"unknown image", api.RunInstancesRequest{Image: "no-such-image"}, api.CodeInvalidAMIIDNotFound, "no-such-image"},
		{"memory 0", api.RunInstancesRequest{Image: im.ID, MemoryMiB: &zero}, api.CodeInvalidParameterValue, "memory"},
		{"cpus 1000", api.RunInstancesRequest{Image: im.ID, CPUs: &many}, api.CodeInvalidParameterValue, "vCPUs"},
		{"big user data", api.RunInstancesRequest{Image: im.ID, UserData: make([]byte, api.MaxUserData+1)}, api.CodeInvalidParameterValue, "user data"},
		{"duplicate name", api.RunInstancesRequest{Image: im.ID, Name: "taken"}, api.CodeInstanceNameDuplicate, "taken"},
		{"unknown type", api.RunInstancesRequest{Image: im.ID, InstanceType: "huge"}, api.CodeInvalidParameterValue, "nano"},
		{"volume on the root device", api.RunInstancesRequest{Image: im.ID, Volumes: []api.VolumeSpec{{DeviceName: "/dev/vda", SizeGiB: 1}}}, api.CodeInvalidParameterValue, "/dev/vda"},
	} {
		_, err := k.RunInstances(ctx, tc.req)
		if !isCode(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v; want %s saying %q", tc.name, err, tc.code, tc.says)
		}
	}
	// A 20 MiB user-data file is refused (the body limit), clearly.
	status, body, err := k.Raw(ctx, "POST", "/v1/instances", strings.NewReader(`{"image": "kiln-guest", "userData": "`+strings.Repeat("QUFB", 5<<20)+`"}`))
	if err != nil || status != 413 || !strings.Contains(string(body), api.CodeRequestTooLarge) {
		t.Errorf("20 MiB user data: %d %s %v", status, body, err)
	}
	if n := dirs(); n != before {
		t.Errorf("refused launches left %d instance directories", n-before)
	}
	if list, _ := k.Instances(ctx, true); len(list) != 1 {
		t.Errorf("refused launches left records: %d instances", len(list))
	}
	// No QEMU was left running for a refused launch: only "taken"'s runs.
	if pids, _ := filepath.Glob(filepath.Join(k.Root, "instances", "*", "qemu.pid")); len(pids) != 1 {
		t.Errorf("%d QEMU pid files after refused launches", len(pids))
	}

	// Instance-store: stop refused, terminate deletes its disk.
	g := kilntest.GuestFiles(t)
	is, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "ephemeral", RootDeviceType: "instance-store",
		Disks: []api.Disk{{Name: g.Disk, Format: "qcow2"}}, Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: g.Cmdline})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.WaitImage(guestCtx(t), is.ID, nil); err != nil {
		t.Fatalf("register ephemeral: %v\nkilnd log:\n%s", err, kilntest.Tail(k.Log.String(), 40))
	}
	eph := runOne(t, k, api.RunInstancesRequest{Image: "ephemeral", InstanceType: "nano"})
	if _, err := k.InstanceAction(ctx, eph.ID, "stop", false); !isCode(err, api.CodeUnsupportedOperation) || !strings.Contains(err.Error(), "terminate") {
		t.Errorf("stop of an instance-store instance: %v", err)
	}
	vol := filepath.Join(k.Root, "instances", eph.ID, eph.BlockDeviceMappings[0].VolumeID+".qcow2")
	if _, err := k.InstanceAction(ctx, eph.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, eph.ID, "terminated")
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Errorf("instance-store disk still there after terminate: %v", err)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
}

// TestGuestPowersOff: a guest that powers itself off becomes stopped, with the reason;
// an instance-store one is terminated.
func TestGuestPowersOff(t *testing.T) {
	k, im := guestKilnd(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano",
		UserData: []byte("#!/bin/sh\n(sleep 1; poweroff) &\n")})
	stopped := waitState(t, k, inst.ID, "stopped")
	if !strings.Contains(stopped.StateReason, "shut itself down") {
		t.Errorf("reason %q", stopped.StateReason)
	}
	if !strings.Contains(console(t, k, inst.ID), "KILN-GUEST poweroff") {
		t.Error("the guest did not power off cleanly")
	}
}
