package hypervisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// fakeQemu writes a stand-in for qemu-system-x86_64 running script.
func fakeQemu(t *testing.T, script string) string {
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// The payload itself: under TCG it must reach 64-bit mode and print its token with
// this probe's nonce, well within the deadline.
func TestProbePayloadRunsUnderTCG(t *testing.T) {
	p := Prober{Qemu: kilntest.Need(t, "qemu-system-x86_64"), KVMDevice: "/nonexistent/kvm", Deadline: 10 * time.Second}
	took, err := p.Probe(context.Background(), AccelTCG)
	if err != nil {
		t.Fatalf("the probe payload does not run under TCG: %v", err)
	}
	t.Logf("the probe guest ran under TCG in %s", took)
}

// Each way a guest can fail to prove itself gives TCG with a reason that says which.
func TestChooseAccelerator(t *testing.T) {
	ctx := context.Background()
	// The silent guests are judged by a short deadline; the others by what they do,
	// with a deadline they never reach even on a busy machine.
	const fast, slow = 300 * time.Millisecond, 30 * time.Second
	for _, c := range []struct {
		name, script, device string
		deadline             time.Duration
		want                 string // in the reason
	}{
		{"no device", "exit 1", "/nonexistent/kvm", slow, "no such file"},
		{"silent guest", "exec sleep 30", "/dev/null", fast, "printed nothing within 300ms"},
		{"silent guest holding its output", "sleep 37", "/dev/null", fast, "printed nothing within 300ms"},
		{"QEMU exits, a child keeps its output", `sleep 37 & echo "qemu: gone" >&2; exit 1`, "/dev/null", slow, "QEMU exited before the probe guest ran (exit status 1): qemu: gone"},
		{"QEMU exits", `echo "qemu: error: failed to set MSR 0x10a to 0x69" >&2; exit 1`, "/dev/null", slow, "MSR 0x10a"},
		{"QEMU aborts", `kill -ABRT $$`, "/dev/null", slow, "QEMU exited before the probe guest ran"},
		{"wrong token", `echo KILNLM64xxxxxxxx; exec sleep 30 >&-`, "/dev/null", slow, `printed "KILNLM64xxxxxxxx", not its token`},
		{"no qemu", "", "/dev/null", slow, "no such file"},
	} {
		qemu := "/nonexistent/qemu"
		if c.script != "" {
			qemu = fakeQemu(t, c.script)
		}
		start := time.Now()
		accel, why, err := Prober{Qemu: qemu, KVMDevice: c.device, Deadline: c.deadline}.Choose(ctx, AccelAuto)
		if err != nil || accel != AccelTCG || !strings.Contains(why, c.want) || !strings.HasPrefix(why, "KVM: ") {
			t.Errorf("%s: %s %q, %v; want tcg and a reason with %q", c.name, accel, why, err, c.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: the choice took %s", c.name, d)
		}
	}

	// Nothing the fakes started outlives the probe.
	if out, err := exec.Command("pgrep", "-f", "^sleep 37$").Output(); err == nil {
		t.Errorf("the probe left processes behind: %s", out)
	}

	// The operator's choice is obeyed, without a probe.
	never := fakeQemu(t, "exit 1")
	if accel, why, err := (Prober{Qemu: never, KVMDevice: "/dev/null"}).Choose(ctx, AccelKVM); err != nil || accel != AccelKVM || !strings.Contains(why, "operator") {
		t.Errorf("--accel kvm: %s %q %v", accel, why, err)
	}
	if _, _, err := (Prober{Qemu: never, KVMDevice: "/nonexistent/kvm"}).Choose(ctx, AccelKVM); err == nil {
		t.Error("--accel kvm without a device: no error")
	}
	if accel, why, err := (Prober{Qemu: never, KVMDevice: "/dev/null"}).Choose(ctx, AccelTCG); err != nil || accel != AccelTCG || !strings.Contains(why, "operator") {
		t.Errorf("--accel tcg: %s %q %v", accel, why, err)
	}
	if _, _, err := (Prober{Qemu: never, KVMDevice: "/dev/null"}).Choose(ctx, "hvf"); err == nil {
		t.Error("--accel hvf: no error")
	}
}

// On this host itself: the choice is made within the deadline and says why; where KVM
// is chosen, the probe guest really ran under it.
func TestChooseHere(t *testing.T) {
	p := Prober{Qemu: kilntest.Need(t, "qemu-system-x86_64"), KVMDevice: "/dev/kvm"}
	start := time.Now()
	accel, why, err := p.Choose(context.Background(), AccelAuto)
	took := time.Since(start)
	if err != nil || why == "" {
		t.Fatalf("%s %q %v", accel, why, err)
	}
	t.Logf("chose %s in %s: %s", accel, took, why)
	if took > ProbeDeadline+2*time.Second {
		t.Errorf("the probe took %s; it must stay near %s", took, ProbeDeadline)
	}
	if strings.Contains(why, "failed under TCG too") {
		t.Errorf("the probe payload failed under TCG: %s", why)
	}
}

// BenchmarkProbe: what the accelerator choice adds to kilnd's start on this host, against
// the floor of starting a QEMU whose firmware exits at its first instruction.
func BenchmarkProbe(b *testing.B) {
	qemu := kilntest.Need(b, "qemu-system-x86_64")
	ctx := context.Background()
	floorFW := make([]byte, payloadSize)
	copy(floorFW[offReset:], []byte{0xB0, 0x10, 0xE6, debugExit, 0xF4}) // mov al, 0x10; out 0xf4, al; hlt
	fw := filepath.Join(b.TempDir(), "exit.bin")
	if err := os.WriteFile(fw, floorFW, 0o600); err != nil {
		b.Fatal(err)
	}
	p := Prober{Qemu: qemu, KVMDevice: "/dev/kvm"}
	var choose, tcg, floor time.Duration
	var accel string
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		a, _, err := p.Choose(ctx, AccelAuto)
		choose += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		accel = a
		t0 = time.Now()
		if _, err := p.Probe(ctx, AccelTCG); err != nil {
			b.Fatal(err)
		}
		tcg += time.Since(t0)
		t0 = time.Now()
		cmd := exec.Command(qemu, "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "16", "-nodefaults", "-no-user-config",
			"-display", "none", "-monitor", "none", "-bios", fw, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
		if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 33 {
			b.Fatalf("the floor's QEMU: %v", err)
		}
		floor += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(choose.Seconds()/n, "s-choose-"+accel)
	b.ReportMetric(tcg.Seconds()/n, "s-probe-tcg")
	b.ReportMetric(floor.Seconds()/n, "s-qemu-start-exit")
	b.ReportMetric(choose.Seconds()/floor.Seconds(), "ratio-choose/floor")
}
