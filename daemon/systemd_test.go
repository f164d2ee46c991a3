package daemon_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"

	"kiln/internal/kilntest"
)

// notifySocket listens as the service manager does for sd_notify datagrams.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(shortDir(t), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// expect waits for a notification starting with prefix, skipping watchdog pings unless
// those are what is expected.
func expect(t *testing.T, ch <-chan string, prefix string) string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m := <-ch:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q notification", prefix)
			return ""
		}
	}
}

func TestSocketActivation(t *testing.T) {
	kilntest.Need(t, "/usr/bin/systemd-socket-activate")
	d := shortDir(t)
	k := &kilnd{tb: t, root: filepath.Join(d, "root"), socket: filepath.Join(d, "activated.sock"), logLevel: "debug", accel: testAccel}
	k.wrap = []string{"/usr/bin/systemd-socket-activate", "-l", k.socket, "--fdname=kiln.sock"}
	k.Client = newClient(k.socket)
	k.start()
	info, err := k.Info(ctxT(t))
	if err != nil || info.Socket != k.socket {
		t.Fatalf("info over the activated socket: %+v, %v", info, err)
	}
	// kilnd serves (in a goroutine) just before it logs so: the line may come a moment
	// after the answer.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(k.log.String(), "activated=true"); {
		if time.Now().After(deadline) {
			t.Fatalf("kilnd did not use the activated socket:\n%s", k.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	k.kill()
	// Both are recorded running; only one still is. A READY=1 sent before
	// reconciliation would say 2.
	syscall.Kill(insts[1].PID, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); qemuRunning(insts[1].PID); {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU %d did not die of SIGKILL", insts[1].PID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	alive, gone := insts[0], insts[1]

	path, ch := notifySocket(t)
	k.env = []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=300000"}
	k.start()
	ready := expect(t, ch, "READY=1")
	if !strings.Contains(ready, "STATUS=1 instances running") {
		t.Errorf("READY=1 came before reconciliation: %q; want STATUS=1 instances running", ready)
	}
	for i := 0; i < 3; i++ {
		expect(t, ch, "WATCHDOG=1")
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	expect(t, ch, "STOPPING=1")
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		t.Fatal("kilnd did not exit on SIGTERM")
	}
	if !qemuRunning(alive.PID) {
		t.Errorf("QEMU of %s stopped with kilnd", alive.ID)
	}
	k.env = nil
	k.start()
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
	k := &kilnd{tb: t, root: filepath.Join(d, "root"), socket: filepath.Join(d, "s")}
	k.Client = newClient(k.socket)
	settings := filepath.Join(d, "kilnd.json")
	os.WriteFile(settings, []byte(`{"logLevel": "warn"}`), 0o644)
	path, ch := notifySocket(t)
	k.env = []string{"NOTIFY_SOCKET=" + path}
	k.start()
	expect(t, ch, "READY=1")
	k.Info(ctxT(t))
	if strings.Contains(k.log.String(), "level=debug") {
		t.Fatalf("debug lines at level warn:\n%s", k.log)
	}
	os.WriteFile(settings, []byte(`{"logLevel": "debug"}`), 0o644)
	k.cmd.Process.Signal(syscall.SIGHUP)
	expect(t, ch, "RELOADING=1")
	expect(t, ch, "READY=1")
	k.Info(ctxT(t))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(k.log.String(), "level=debug") {
		if time.Now().After(deadline) {
			t.Fatalf("no debug lines after reloading to debug:\n%s", k.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.WriteFile(settings, []byte(`{"logLevel": "loud"}`), 0o644)
	k.cmd.Process.Signal(syscall.SIGHUP)
	expect(t, ch, "READY=1")
	if _, err := k.Info(ctxT(t)); err != nil {
		t.Fatalf("kilnd stopped serving after a bad settings file: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(k.log.String(), "settings kept"); {
		if time.Now().After(deadline) {
			t.Fatalf("a bad settings file was not reported:\n%s", k.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
