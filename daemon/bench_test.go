package daemon_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/daemon/record"
	"kiln/images"

	"kiln/internal/ids"
	"kiln/internal/kilntest"
)

// newKilndB starts kilnd for a benchmark, with its store under rootDir.
func newKilndB(b *testing.B, rootDir string) *kilnd {
	d := shortDir(b)
	k := kilndAt(b, rootDir, filepath.Join(d, "s"), "info")
	k.Accel = "" // kilnd chooses
	k.Start()
	return k
}

// BenchmarkRegister1GiB registers a 1 GiB raw disk of random data and, in the same
// iteration, runs `qemu-img convert` of the same disk to qcow2 (the tool's own time,
// its output still in the page cache) and the same followed by an fsync of the output
// (a durable artifact, as a register must leave). It reports the three times and the
// ratios of register to each (target ≤ 1.3 against the plain convert), and the time of
// one sha256 pass over the converted layer, which naming a layer by digest cannot avoid.
func BenchmarkRegister1GiB(b *testing.B) {
	k := newKilndB(b, filepath.Join(b.TempDir(), "root"))
	ctx := context.Background()
	dir := b.TempDir()
	disk := randomDisk(b, dir, 1<<30)
	var kilnTotal, convertTotal, syncTotal, hashTotal time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		out := filepath.Join(dir, "converted.qcow2")
		os.Remove(out)
		start := time.Now()
		if o, err := kilntest.CommandWithin(b, 10*time.Minute, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", disk, out).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img convert: %v: %s", err, o)
		}
		convertTotal += time.Since(start)
		f, err := os.Open(out)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		syncTotal += time.Since(start)
		// One sha256 pass over the converted layer: what naming it by digest costs.
		start = time.Now()
		f.Seek(0, io.SeekStart)
		if _, err := io.Copy(sha256.New(), f); err != nil {
			b.Fatal(err)
		}
		hashTotal += time.Since(start)
		f.Close()
		os.Remove(out)
		b.StartTimer()

		start = time.Now()
		im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: fmt.Sprintf("bench-%d", i), Disks: []api.Disk{{Name: disk, Format: "raw"}}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.WaitImage(ctx, im.ID, nil); err != nil {
			b.Fatal(err)
		}
		kilnTotal += time.Since(start)

		b.StopTimer()
		k.drop(b, im.ID)
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(kilnTotal.Seconds()/n, "s-register")
	b.ReportMetric(convertTotal.Seconds()/n, "s-qemu-img-convert")
	b.ReportMetric(syncTotal.Seconds()/n, "s-convert+fsync")
	b.ReportMetric(hashTotal.Seconds()/n, "s-sha256-of-layer")
	b.ReportMetric(kilnTotal.Seconds()/convertTotal.Seconds(), "ratio-to-convert")
	b.ReportMetric(kilnTotal.Seconds()/syncTotal.Seconds(), "ratio-to-convert+fsync")
}

// BenchmarkRegisterAsUser registers a 256 MiB raw disk with the kiln CLI as root and,
// in the same iteration, as another user, whose disk that user's qemu-nbd exports to
// kilnd's qemu-img (as root, kilnd's qemu-img reads the file directly). It reports both
// times and their ratio: the cost of never reading a caller's file with kilnd's own
// rights, nor letting the caller's process near the store.
func BenchmarkRegisterAsUser(b *testing.B) { benchRegisterAsUser(b, 256<<20) }

// BenchmarkRegister1GiBAsUser is BenchmarkRegisterAsUser with a 1 GiB disk.
func BenchmarkRegister1GiBAsUser(b *testing.B) { benchRegisterAsUser(b, 1<<30) }

func benchRegisterAsUser(b *testing.B, size int64) {
	d := publicDir(b)
	k := kilndIn(b, d, "info")
	users := accounts(b, k.Socket)
	k.Start()
	root := &account{t: b, name: "root", cred: &syscall.Credential{}, socket: k.Socket}
	disk := randomDisk(b, d, size)
	if err := os.Chmod(disk, 0o644); err != nil {
		b.Fatal(err)
	}
	var asRoot, asUser time.Duration
	for i := 0; b.Loop(); i++ {
		for _, a := range []struct {
			acct  *account
			total *time.Duration
		}{{root, &asRoot}, {users["alice"], &asUser}} {
			start := time.Now()
			id := a.acct.ok("image", "register", fmt.Sprintf("bench-%s-%d", a.acct.name, i), "--disk", disk+",format=raw", "--wait", "-q")
			*a.total += time.Since(start)
			b.StopTimer()
			k.drop(b, id)
			b.StartTimer()
		}
	}
	n := float64(b.N)
	b.ReportMetric(asRoot.Seconds()/n, "s-as-root")
	b.ReportMetric(asUser.Seconds()/n, "s-as-user")
	b.ReportMetric(asUser.Seconds()/asRoot.Seconds(), "ratio-user-to-root")
}

// BenchmarkImageLsFilter10k lists images with a name filter in a store of 10,000
// images, through the API as `kiln image ls --filter name=...` does, and reports the
// median latency (target ≤ 50 ms).
func BenchmarkImageLsFilter10k(b *testing.B) {
	// The records are written straight into a store on tmpfs, then kilnd opens it.
	rootDir := tmpfsRoot(b)
	db, err := record.OpenFile(rootDir)
	if err != nil {
		b.Fatal(err)
	}
	s, err := images.Open(context.Background(), rootDir, db)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		im := &images.Image{
			ID: ids.NewID(images.ImagePrefix), Name: fmt.Sprintf("image-%05d", i), OwnerID: "root",
			State: images.StateAvailable, CreationDate: time.Now(), Tags: map[string]string{"n": fmt.Sprint(i)},
			Config: images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceType: "ebs", RootDeviceName: "/dev/vda",
				BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &images.EBS{SnapshotID: ids.NewID(images.SnapshotPrefix), VolumeSize: 8}}}},
		}
		if err := s.CreateImage(im); err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	k := newKilndB(b, rootDir)
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		list, err := k.Images(ctx, client.ListImagesOptions{Filters: []string{fmt.Sprintf("name=image-%05d", i%10000)}})
		lat = append(lat, time.Since(start))
		if err != nil || len(list) != 1 {
			b.Fatalf("ls: %d images, %v", len(list), err)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms-p99")
}

// tmpfsRoot is a new directory on tmpfs for a kilnd's root, removed at the end: a setup
// that writes many records would otherwise time its fsyncs on a disk, not what it
// measures.
func tmpfsRoot(b *testing.B) string {
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = b.TempDir()
	}
	rootDir, err := os.MkdirTemp(base, "kiln-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(rootDir) })
	return rootDir
}

// drop deregisters an image and collects its content.
func (k *kilnd) drop(b *testing.B, id string) {
	ctx := context.Background()
	if _, err := k.DeregisterImage(ctx, id); err != nil {
		b.Fatal(err)
	}
	if _, err := k.GC(ctx); err != nil {
		b.Fatal(err)
	}
}

// rssKiB is a process's resident memory.
func rssKiB(b *testing.B, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb)
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// registerRandomImage registers an image whose root disk holds size bytes of random
// data (written from offset 0), with the guest's kernel.
func registerRandomImage(b *testing.B, k *kilnd, name string, size int64) api.Image {
	g := kilntest.GuestFiles(b)
	disk := randomDisk(b, b.TempDir(), size)
	ctx := context.Background()
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: name, Disks: []api.Disk{{Name: disk, Format: "raw"}},
		Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: "console=ttyS0 no_timer_check"})
	if err != nil {
		b.Fatal(err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		b.Fatal(err)
	}
	os.Remove(disk)
	return im
}

// BenchmarkLaunch measures launch latency, from the API call to QEMU answering on QMP
// with its vCPUs running, for an image of 64 MiB and one of 4 GiB of written data
// (median of b.N launches each; target ≤ 200 ms and a ratio ≤ 1.1), and beside it the
// time to cp the 4 GiB layer, which tools that copy an image per launch pay.
func BenchmarkLaunch(b *testing.B) {
	k := newKilndB(b, filepath.Join(b.TempDir(), "root"))
	b.Cleanup(k.KillQEMUs)
	small := registerRandomImage(b, k, "small-64m", 64<<20)
	big := registerRandomImage(b, k, "big-4g", 4<<30)
	ctx := context.Background()
	launch := func(im api.Image) time.Duration {
		start := time.Now()
		insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := k.InstanceAction(ctx, insts[0].ID, "terminate", true); err != nil {
			b.Fatal(err)
		}
		if _, err := k.WaitInstance(ctx, insts[0].ID, "terminated"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		return d
	}
	var small64, big4 []time.Duration
	for b.Loop() {
		small64 = append(small64, launch(small))
		big4 = append(big4, launch(big))
	}
	b.StopTimer()
	median := func(ds []time.Duration) float64 {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	m64, m4g := median(small64), median(big4)
	b.ReportMetric(m64, "ms-median-64MiB")
	b.ReportMetric(m4g, "ms-median-4GiB")
	b.ReportMetric(m4g/m64, "ratio-4GiB/64MiB")

	layer := filepath.Join(k.Root, "content", "blobs", "sha256", largestBlob(k))
	dst := filepath.Join(filepath.Dir(k.Root), "copy.qcow2")
	start := time.Now()
	if out, err := kilntest.CommandWithin(b, 10*time.Minute, "cp", layer, dst).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v: %s", err, out)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-cp-4GiB-layer")
	os.Remove(dst)
}

// largestBlob is the largest blob in the store: the 4 GiB image's layer.
func largestBlob(k *kilnd) string {
	var best string
	var size int64
	for name, n := range k.blobs() {
		if n > size {
			best, size = name, n
		}
	}
	return best
}

// BenchmarkDaemonMemory reports kilnd's resident memory in steady state (target ≤ 60
// MiB): idle with an image registered, and with 10 instances running, once every guest
// is ready. Each iteration is what a client does to a steady daemon (ps and an inspect
// of each instance); the RSS reported is the largest seen after the iterations. The
// time per iteration is not the point and is not reported.
func BenchmarkDaemonMemory(b *testing.B) {
	if kilntest.Race {
		b.Skip("kilnd built with -race holds the race detector's shadow memory")
	}
	k := newKilndB(b, filepath.Join(b.TempDir(), "root"))
	b.Cleanup(k.KillQEMUs)
	ctx := context.Background()
	g := kilntest.GuestFiles(b)
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "guest", Disks: []api.Disk{{Name: g.Disk, Format: "qcow2"}},
		Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: g.Cmdline})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := k.WaitImage(guestCtx(b), im.ID, nil); err != nil {
		b.Fatal(err)
	}
	steady := func(insts []api.Instance) float64 {
		if _, err := k.Instances(ctx, true); err != nil {
			b.Fatal(err)
		}
		for _, inst := range insts {
			if _, err := k.Instance(ctx, inst.ID); err != nil {
				b.Fatal(err)
			}
		}
		return rssKiB(b, k.Cmd.Process.Pid)
	}
	// Idle: warmed by as many iterations as the busy phase will run.
	idle := 0.0
	for range 100 {
		idle = max(idle, steady(nil))
	}
	insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano", Count: 10})
	if err != nil {
		b.Fatal(err)
	}
	// Ten guests boot at once: under TCG on a small host that takes longer than one.
	all, cancel := context.WithTimeout(ctx, 5*guestDeadline/2)
	defer cancel()
	for _, inst := range insts {
		if _, err := k.WaitInstance(all, inst.ID, "ready"); err != nil {
			b.Fatalf("instance %s not ready: %v\n%s", inst.ID, err, k.Evidence(inst.ID))
		}
	}
	busy := 0.0
	for b.Loop() {
		busy = max(busy, steady(insts))
	}
	b.ReportMetric(0, "ns/op") // a memory benchmark: the loop's time means nothing
	b.ReportMetric(idle/1024, "MiB-rss-idle")
	b.ReportMetric(busy/1024, "MiB-rss-10-instances-ready")
}

// stoppedWithDelta launches an instance of im, stops it, and writes size bytes into its
// root volume (as the guest would have), returning the instance and the volume's path.
func stoppedWithDelta(b *testing.B, k *kilnd, im api.Image, size int64) (api.Instance, string) {
	ctx := context.Background()
	insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
	if err != nil {
		b.Fatal(err)
	}
	inst := insts[0]
	if _, err := k.InstanceAction(ctx, inst.ID, "stop", true); err != nil {
		b.Fatal(err)
	}
	if _, err := k.WaitInstance(ctx, inst.ID, "stopped"); err != nil {
		b.Fatal(err)
	}
	vol := filepath.Join(k.Root, "instances", inst.ID, inst.BlockDeviceMappings[0].VolumeID+".qcow2")
	// Written as the guest would, through the overlay (nothing downstream compresses).
	if out, err := kilntest.CommandWithin(b, 10*time.Minute, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x5c 0 %d", size), vol).CombinedOutput(); err != nil {
		b.Fatalf("write the delta: %v %s", err, out)
	}
	return inst, vol
}

// BenchmarkCreateImage measures create-image of a stopped instance with a 256 MiB delta
// over a 64 MiB base and over a 4 GiB base (target ratio ≤ 1.2: the cost follows the
// delta), against one sha256 pass over the delta (target ≤ 1.5×), and beside them what
// image builders do, `qemu-img convert` of the whole instance disk (time and bytes), and
// copy-image (time, target ≤ 50 ms, and bytes added, target 0).
func BenchmarkCreateImage(b *testing.B) {
	k := newKilndB(b, filepath.Join(b.TempDir(), "root"))
	b.Cleanup(k.KillQEMUs)
	ctx := context.Background()
	small := registerRandomImage(b, k, "base-64m", 64<<20)
	big := registerRandomImage(b, k, "base-4g", 4<<30)
	instSmall, volSmall := stoppedWithDelta(b, k, small, 256<<20)
	instBig, volBig := stoppedWithDelta(b, k, big, 256<<20)

	create := func(inst api.Instance, name string) time.Duration {
		start := time.Now()
		im, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: name})
		if err == nil {
			im, err = k.WaitImage(ctx, im.ID, nil)
		}
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		k.drop(b, im.ID)
		b.StartTimer()
		return d
	}
	hash := func(path string) time.Duration {
		start := time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(sha256.New(), f)
		f.Close()
		return time.Since(start)
	}
	var tSmall, tBig, tHash time.Duration
	for i := 0; b.Loop(); i++ {
		tSmall += create(instSmall, fmt.Sprintf("over-64m-%d", i))
		tBig += create(instBig, fmt.Sprintf("over-4g-%d", i))
		b.StopTimer()
		tHash += hash(volBig)
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(tSmall.Seconds()/n, "s-create-over-64MiB")
	b.ReportMetric(tBig.Seconds()/n, "s-create-over-4GiB")
	b.ReportMetric(tBig.Seconds()/tSmall.Seconds(), "ratio-4GiB/64MiB")
	b.ReportMetric(tHash.Seconds()/n, "s-sha256-of-delta")
	b.ReportMetric(tBig.Seconds()/tHash.Seconds(), "ratio-create/sha256")

	// What an image builder does: convert the whole instance disk.
	out := filepath.Join(b.TempDir(), "whole.qcow2")
	start := time.Now()
	if o, err := kilntest.CommandWithin(b, 10*time.Minute, "qemu-img", "convert", "-q", "-O", "qcow2", volBig, out).CombinedOutput(); err != nil {
		b.Fatalf("qemu-img convert: %v %s", err, o)
	}
	b.ReportMetric(time.Since(start).Seconds(), "s-qemu-img-convert-whole-disk")
	st, _ := os.Stat(out)
	b.ReportMetric(float64(st.Size()>>20), "MiB-qemu-img-convert-whole-disk")
	os.Remove(out)

	// Copy: a new record over the same content.
	im, err := k.CreateImage(ctx, instBig.ID, api.CreateImageRequest{Name: "to-copy"})
	if err == nil {
		im, err = k.WaitImage(ctx, im.ID, nil)
	}
	if err != nil {
		b.Fatal(err)
	}
	before := total(k.blobs())
	var copies []time.Duration
	for i := range 10 {
		start = time.Now()
		if _, err := k.CopyImage(ctx, im.ID, api.CopyImageRequest{Name: fmt.Sprintf("copied-%d", i)}); err != nil {
			b.Fatal(err)
		}
		copies = append(copies, time.Since(start))
	}
	sort.Slice(copies, func(i, j int) bool { return copies[i] < copies[j] })
	b.ReportMetric(float64(copies[len(copies)/2].Microseconds())/1000, "ms-copy-image-median")
	b.ReportMetric(float64(total(k.blobs())-before), "bytes-added-by-10-copies")
	st, _ = os.Stat(volSmall)
	b.ReportMetric(float64(st.Size()>>20), "MiB-delta-volume")
}
