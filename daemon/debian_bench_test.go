package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// BenchmarkDebianSSHReady measures how long the Debian guest takes from launch to a
// working ssh login with the launch's key, through kiln (run, then ssh on the instance's
// port) and, in the same iteration, through bare QEMU booting the same disk (an overlay
// of it) with the same NoCloud seed, vCPUs, memory and accelerator, polled the same way:
// the ratio of the medians kiln/bare is the figure (target ≤ 1.15; run it with
// -benchtime 3x or more: one boot's time varies by a fifth here). It also reports when
// kiln said the instance was ready (cloud-init's end, what run --wait waits for).
func BenchmarkDebianSSHReady(b *testing.B) {
	disk := kilntest.DebianDisk(b)
	sshBin := kilntest.Need(b, "ssh")
	qemu := kilntest.Need(b, "qemu-system-x86_64")
	k := newKilndB(b, filepath.Join(b.TempDir(), "root"))
	b.Cleanup(k.KillQEMUs)
	ctx := context.Background()
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "debian-12", Disks: []api.Disk{{Name: disk, Format: "qcow2"}}})
	if err == nil {
		im, err = k.WaitImage(ctx, im.ID, nil)
	}
	if err != nil {
		b.Fatal(err)
	}
	kp, err := k.CreateKeyPair(ctx, api.CreateKeyPairRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte(kp.KeyMaterial), 0o600); err != nil {
		b.Fatal(err)
	}
	info, err := k.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// login polls ssh on port until a login with the key runs true, and says when.
	login := func(port int, start time.Time) time.Duration {
		deadline := start.Add(kilntest.DebianDeadline)
		for time.Now().Before(deadline) {
			cmd := kilntest.CommandWithin(b, time.Minute, sshBin, "-i", keyFile, "-p", strconv.Itoa(port),
				"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "debian@127.0.0.1", "true")
			if cmd.Run() == nil {
				return time.Since(start)
			}
			time.Sleep(500 * time.Millisecond)
		}
		b.Fatalf("no ssh login on port %d within %s", port, kilntest.DebianDeadline)
		return 0
	}
	var kilnTimes, readyTimes, bareTimes []time.Duration
	kiln := func() {
		start := time.Now()
		insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "small", KeyName: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		inst := insts[0]
		kilnTimes = append(kilnTimes, login(inst.SSHPort, start))
		if _, err := k.WaitInstance(ctx, inst.ID, "ready"); err != nil {
			b.Fatal(err)
		}
		readyTimes = append(readyTimes, time.Since(start))
		if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
			b.Fatal(err)
		}
	}
	// The machine's speed drifts over minutes: the two take turns going first.
	small := api.Instance{CPUs: 1, MemoryMiB: 1024} // the type "small", as kiln's instance is
	for i := range b.N {                            // each iteration takes minutes: b.N is 1 but with -benchtime Nx
		bare := func() {
			bareTimes = append(bareTimes, bareSSHReady(b, qemu, disk, info.Accelerator, small, kp.PublicKey, filepath.Join(dir, strconv.Itoa(i)), login))
		}
		if i%2 == 0 {
			kiln()
			bare()
		} else {
			bare()
			kiln()
		}
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	mk, mr, mb := median(kilnTimes), median(readyTimes), median(bareTimes)
	b.ReportMetric(mk.Seconds(), "s-kiln-ssh")
	b.ReportMetric(mr.Seconds(), "s-kiln-ready")
	b.ReportMetric(mb.Seconds(), "s-bare-ssh")
	b.ReportMetric(float64(mk)/float64(mb), "ratio-kiln/bare")
	b.Logf("kiln to ssh %v, to ready %v; bare QEMU to ssh %v", kilnTimes, readyTimes, bareTimes)
}

// bareSSHReady boots disk (through an overlay) with plain QEMU as inst was (vCPUs,
// memory, accelerator), a NoCloud seed giving the key, and SSH forwarded from a free
// loopback port, and returns how long until login (from login) worked.
func bareSSHReady(b *testing.B, qemu, disk, accel string, inst api.Instance, publicKey, dir string,
	login func(port int, start time.Time) time.Duration) time.Duration {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	overlay, seed := filepath.Join(dir, "root.qcow2"), filepath.Join(dir, "seed.iso")
	if out, err := kilntest.CommandWithin(b, time.Minute, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, overlay).CombinedOutput(); err != nil {
		b.Fatalf("qemu-img create: %v: %s", err, out)
	}
	meta := fmt.Sprintf("instance-id: i-bare%d\nlocal-hostname: bare\npublic-keys:\n  - %q\n", time.Now().UnixNano(), publicKey)
	if err := builder.WriteSeed(seed, nil, []byte(meta)); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	start := time.Now()
	cmd := exec.Command(qemu, "-machine", "q35,accel="+accel, "-cpu", cpu, "-smp", strconv.Itoa(inst.CPUs), "-m", strconv.Itoa(inst.MemoryMiB),
		"-nodefaults", "-display", "none", "-serial", "file:"+filepath.Join(dir, "console.log"),
		"-drive", "file="+overlay+",if=virtio,format=qcow2", "-drive", "file="+seed+",if=virtio,format=raw,readonly=on",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22", port), "-device", "virtio-net-pci,netdev=n0,romfile=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	return login(port, start)
}
