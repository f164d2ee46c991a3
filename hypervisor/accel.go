package hypervisor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Accelerators QEMU can run guests with.
const (
	AccelKVM = "kvm" // hardware virtualization through /dev/kvm
	AccelTCG = "tcg" // QEMU's software emulation: slower, works everywhere
)

// kvmProbeTime is how long a probe guest must keep running under KVM to count.
const kvmProbeTime = 500 * time.Millisecond

// DetectAccelerator returns AccelKVM when KVM is usable here and AccelTCG otherwise,
// with the reason KVM is not used. Usable means more than a /dev/kvm that opens: some
// hosts (nested or sandboxed ones) offer a device whose vCPUs abort on their first run,
// so a guest with no disks is started under KVM and must stay up for kvmProbeTime.
// qemu is the qemu-system-x86_64 binary; dev is normally /dev/kvm.
func DetectAccelerator(ctx context.Context, qemu, dev string) (accel, reason string) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return AccelTCG, err.Error()
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35",
		"-nodefaults", "-display", "none", "-serial", "none", "-monitor", "none", "-m", "64", "-no-reboot")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return AccelTCG, fmt.Sprintf("kvm probe: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i > 0 {
			msg = msg[:i]
		}
		return AccelTCG, fmt.Sprintf("a KVM guest stopped at once (%v): %s", err, msg)
	case <-time.After(kvmProbeTime):
		cmd.Process.Kill()
		<-exited
		return AccelKVM, ""
	}
}
