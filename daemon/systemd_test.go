package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

// expect waits for a notification (kilntest.Datagrams) starting with prefix, skipping
// watchdog pings unless those are what is expected.
func expect(t *testing.T, ch <-chan []byte, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		m := string(kilntest.NextDatagram(t, ch, time.Until(deadline), "a "+prefix+" notification"))
		if strings.HasPrefix(m, prefix) {
			return m
		}
	}
}

func TestSocketActivation(t *testing.T) {
	kilntest.Need(t, "/usr/bin/systemd-socket-activate")
	d := shortDir(t)
	k := kilndAt(t, filepath.Join(d, "root"), filepath.Join(d, "activated.sock"), "debug")
	k.Wrap = []string{"/usr/bin/systemd-socket-activate", "-l", k.Socket, "--fdname=kiln.sock"}
	k.Start()
	info, err := k.Info(ctxT(t))
	if err != nil || info.Socket != k.Socket {
		t.Fatalf("info over the activated socket: %+v, %v", info, err)
	}
	// kilnd serves (in a goroutine) just before it logs so: the line may come a moment
	// after the answer.
	kilntest.Poll(t, 10*time.Second, "kilnd logs that it uses the activated socket (activated=true)",
		func() bool { return strings.Contains(k.Log.String(), "activated=true") }, k.Log.String)
}

// TestNotify: READY=1 only after reconciliation (of two instances recorded running, the
// one whose QEMU was killed while kilnd was down is found gone first), WATCHDOG=1 keeps
// coming, STOPPING=1 on SIGTERM, the QEMU still runs after kilnd exits, and a new kilnd
// reattaches it.
func TestNotify(t *testing.T) {
	k, _ := guestKilnd(t)
	ctx := ctxT(t)
	insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: "kiln-guest", Name: "n", InstanceType: "nano", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		waitState(t, k, inst.ID, "running")
	}
	k.Kill()
	// Both are recorded running; only one still is. A READY=1 sent before
	// reconciliation would say 2.
	syscall.Kill(insts[1].PID, syscall.SIGKILL)
	kilntest.Poll(t, 10*time.Second, fmt.Sprintf("QEMU %d dies of SIGKILL", insts[1].PID),
		func() bool { return !kilntest.QEMUAlive(insts[1].PID) }, nil)
	alive, gone := insts[0], insts[1]

	path, ch := kilntest.Datagrams(t)
	k.Env = []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=300000"}
	k.Start()
	ready := expect(t, ch, "READY=1")
	if !strings.Contains(ready, "STATUS=1 instances running") {
		t.Errorf("READY=1 came before reconciliation: %q; want STATUS=1 instances running", ready)
	}
	for i := 0; i < 3; i++ {
		expect(t, ch, "WATCHDOG=1")
	}
	k.Cmd.Process.Signal(syscall.SIGTERM)
	expect(t, ch, "STOPPING=1")
	select {
	case <-k.Done:
	case <-time.After(30 * time.Second):
		t.Fatal("kilnd did not exit on SIGTERM")
	}
	if !kilntest.QEMUAlive(alive.PID) {
		t.Errorf("QEMU of %s stopped with kilnd", alive.ID)
	}
	k.Env = nil
	k.Start()
	if got, err := k.Instance(ctx, alive.ID); err != nil || got.State != "running" || got.PID != alive.PID {
		t.Errorf("after a new kilnd: %+v, %v", got, err)
	}
	if got, err := k.Instance(ctx, gone.ID); err != nil || got.State != "stopped" {
		t.Errorf("the instance whose QEMU was killed, after a new kilnd: %+v, %v", got, err)
	}
}

// TestReload: SIGHUP re-reads the settings file, between RELOADING=1 and READY=1; a bad
// file is refused and kilnd goes on.
func TestReload(t *testing.T) {
	d := shortDir(t)
	k := kilndAt(t, filepath.Join(d, "root"), filepath.Join(d, "s"), "")
	k.Accel = "" // as the service runs it: kilnd chooses
	settings := filepath.Join(d, "kilnd.json")
	os.WriteFile(settings, []byte(`{"logLevel": "warn"}`), 0o644)
	path, ch := kilntest.Datagrams(t)
	k.Env = []string{"NOTIFY_SOCKET=" + path}
	k.Start()
	expect(t, ch, "READY=1")
	k.Info(ctxT(t))
	if strings.Contains(k.Log.String(), "level=debug") {
		t.Fatalf("debug lines at level warn:\n%s", k.Log)
	}
	os.WriteFile(settings, []byte(`{"logLevel": "debug"}`), 0o644)
	k.Cmd.Process.Signal(syscall.SIGHUP)
	expect(t, ch, "RELOADING=1")
	expect(t, ch, "READY=1")
	k.Info(ctxT(t))
	kilntest.Poll(t, 10*time.Second, "debug lines after reloading to debug",
		func() bool { return strings.Contains(k.Log.String(), "level=debug") }, k.Log.String)
	os.WriteFile(settings, []byte(`{"logLevel": "loud"}`), 0o644)
	k.Cmd.Process.Signal(syscall.SIGHUP)
	expect(t, ch, "READY=1")
	if _, err := k.Info(ctxT(t)); err != nil {
		t.Fatalf("kilnd stopped serving after a bad settings file: %v", err)
	}
	kilntest.Poll(t, 10*time.Second, "a bad settings file reported (settings kept)",
		func() bool { return strings.Contains(k.Log.String(), "settings kept") }, k.Log.String)
}
