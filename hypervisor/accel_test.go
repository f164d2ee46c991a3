package hypervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeQemu writes a stand-in for qemu-system-x86_64 running script.
func fakeQemu(t *testing.T, script string) string {
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetectAccelerator(t *testing.T) {
	ctx := context.Background()
	if a, why := DetectAccelerator(ctx, "qemu-system-x86_64", "/nonexistent/kvm"); a != AccelTCG || why == "" {
		t.Errorf("no device: %s %q", a, why)
	}
	// A device that opens but whose guests abort at once (as nested hosts do).
	crash := fakeQemu(t, `echo "qemu: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$`)
	if a, why := DetectAccelerator(ctx, crash, "/dev/null"); a != AccelTCG || !strings.Contains(why, "MSR 0x10a") {
		t.Errorf("aborting guest: %s %q", a, why)
	}
	// A guest that keeps running: KVM works.
	if a, why := DetectAccelerator(ctx, fakeQemu(t, "exec sleep 30"), "/dev/null"); a != AccelKVM {
		t.Errorf("running guest: %s %q", a, why)
	}
	if a, _ := DetectAccelerator(ctx, "/nonexistent/qemu", "/dev/null"); a != AccelTCG {
		t.Errorf("no qemu: %s", a)
	}
}
