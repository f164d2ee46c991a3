package daemon_test

import (
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/hypervisor"

	"kiln/internal/kilntest"
)

// TestGuestPanics: a guest whose kernel panics is not left paused or spinning: pvpanic
// tells QEMU, QEMU tells kilnd, and kilnd stops the instance with the reason, which a
// start then clears.
func TestGuestPanics(t *testing.T) {
	k, im := guestKilnd(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano",
		UserData: []byte("#!/bin/sh\nsleep 1\necho c > /proc/sysrq-trigger\n")})
	stopped := waitState(t, k, inst.ID, "stopped")
	if stopped.StateReason != hypervisor.ReasonPanicked || stopped.PID != 0 {
		t.Errorf("after a panic: state %s, reason %q, pid %d", stopped.State, stopped.StateReason, stopped.PID)
	}
	if kilntest.QEMUAlive(inst.PID) {
		t.Errorf("QEMU %d still runs after the panic", inst.PID)
	}
	if con := console(t, k, inst.ID); !strings.Contains(con, "Kernel panic") || strings.Contains(con, "KILN-GUEST ready") {
		t.Errorf("the console does not show the panic before ready:\n%s", con)
	}
	if !strings.Contains(k.Log.String(), "the guest failed") {
		t.Errorf("kilnd did not log the failure:\n%s", k.Log)
	}
}

// TestGuestPanicsWhileStopping: a guest that panics on the power button (its acpid runs
// a panic instead of poweroff) ends the stop's wait at once, and the stop's reason says
// why, not that it was forced off after the grace.
func TestGuestPanicsWhileStopping(t *testing.T) {
	k, im := guestKilnd(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano",
		UserData: []byte("#!/bin/sh\nprintf '#!/bin/sh\\necho c > /proc/sysrq-trigger\\n' > /etc/acpi/pwr\n")})
	waitState(t, k, inst.ID, "ready")
	start := time.Now()
	if _, err := k.InstanceAction(ctxT(t), inst.ID, "stop", false); err != nil {
		t.Fatal(err)
	}
	stopped := waitState(t, k, inst.ID, "stopped")
	took := time.Since(start)
	if want := "stopped by root: " + hypervisor.ReasonPanicked; stopped.StateReason != want {
		t.Errorf("reason %q, want %q", stopped.StateReason, want)
	}
	if took >= 30*time.Second {
		t.Errorf("the stop took %s: it waited out the grace though the guest had panicked", took)
	}
	if con := console(t, k, inst.ID); !strings.Contains(con, "Kernel panic") {
		t.Errorf("no panic on the console:\n%s", con)
	}
}
