package daemon_test

import (
	"strings"
	"testing"

	"kiln/daemon/api"
	"kiln/hypervisor"
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
	if qemuRunning(inst.PID) {
		t.Errorf("QEMU %d still runs after the panic", inst.PID)
	}
	if con := console(t, k, inst.ID); !strings.Contains(con, "Kernel panic") || strings.Contains(con, "KILN-GUEST ready") {
		t.Errorf("the console does not show the panic before ready:\n%s", con)
	}
	if !strings.Contains(k.log.String(), "the guest failed") {
		t.Errorf("kilnd did not log the failure:\n%s", k.log)
	}
}
