package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// TestAccelerator: kilnd chooses its accelerator once, says why in kiln info, and obeys
// the operator's --accel and the settings file's "accelerator" (the flag wins).
func TestAccelerator(t *testing.T) {
	info := func(k *kilnd) (string, string) {
		t.Helper()
		in, err := k.Info(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		return in.Accelerator, in.AcceleratorReason
	}

	// auto (the default) probes: the choice comes with the probe's result. On a host
	// whose KVM runs no kernel, that is tcg; on one where it works, kvm.
	start := time.Now()
	k := kilndIn(t, shortDir(t), "info")
	k.Accel = "" // auto, as a kilnd with no --accel chooses
	k.Start()
	took := time.Since(start)
	accel, why := info(k)
	if !strings.HasPrefix(why, "KVM: ") || (accel == "kvm") != strings.Contains(why, "ran to its end") {
		t.Errorf("auto: %s %q", accel, why)
	}
	if strings.Contains(why, "failed under TCG too") {
		t.Errorf("auto: the probe payload failed under TCG: %s", why)
	}
	t.Logf("auto chose %s (kilnd served %s after start): %s", accel, took.Round(time.Millisecond), why)
	if accel == "tcg" && !strings.Contains(k.Log.String(), why) {
		t.Errorf("kilnd's log does not give the reason %q:\n%s", why, k.Log)
	}
	k.Stop()

	// --accel tcg is obeyed without a probe.
	dir := shortDir(t)
	k = kilndIn(t, dir, "info")
	k.Accel = "tcg"
	k.Start()
	if accel, why := info(k); accel != "tcg" || !strings.Contains(why, "operator") {
		t.Errorf("--accel tcg: %s %q", accel, why)
	}
	k.Stop()

	// The settings file's accelerator, and the flag over it.
	settings := filepath.Join(dir, "kilnd.json")
	if err := os.WriteFile(settings, []byte(`{"accelerator": "tcg"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Accel = ""
	k.Start()
	if accel, why := info(k); accel != "tcg" || !strings.Contains(why, "operator") {
		t.Errorf("settings accelerator tcg: %s %q", accel, why)
	}
	k.Stop()
	// QEMU runs as a user of its own: --accel kvm is obeyed when /dev/kvm lets that
	// user in (group kvm, as Debian has it), and refused with the fix when it does not.
	if st, err := os.Stat("/dev/kvm"); err == nil && st.Mode().Perm()&0o066 != 0 {
		k.Accel = "kvm"
		k.Start()
		if accel, why := info(k); accel != "kvm" || !strings.Contains(why, "operator") {
			t.Errorf("--accel kvm over the settings' tcg: %s %q", accel, why)
		}
		k.Stop()
	} else if err == nil {
		out, err := kilntest.CommandWithin(t, 30*time.Second, kilndBin, "--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s"), "--accel", "kvm").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "does not let QEMU's user") || !strings.Contains(string(out), "mode 0660") {
			t.Errorf("--accel kvm with /dev/kvm of mode %#o: %v\n%s", st.Mode().Perm(), err, out)
		}
	}

	// Wrong values are refused at start, naming what is accepted.
	if out, err := kilntest.CommandWithin(t, 30*time.Second, kilndBin, "--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s"), "--accel", "hvf").CombinedOutput(); err == nil || !strings.Contains(string(out), "want auto, kvm or tcg") {
		t.Errorf("--accel hvf: %v\n%s", err, out)
	}
	if err := os.WriteFile(settings, []byte(`{"accelerator": "xen"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := kilntest.CommandWithin(t, 30*time.Second, kilndBin, "--root", filepath.Join(dir, "root"), "--socket", filepath.Join(dir, "s"), "--config", settings).CombinedOutput(); err == nil || !strings.Contains(string(out), "want auto, kvm or tcg") {
		t.Errorf("settings accelerator xen: %v\n%s", err, out)
	}
}
