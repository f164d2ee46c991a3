package daemon_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/images"
)

// newKilndB starts kilnd for a benchmark, with its store under rootDir.
func newKilndB(b *testing.B, rootDir string) *kilnd {
	d := shortDir(b)
	k := &kilnd{tb: b, root: rootDir, socket: filepath.Join(d, "s")}
	k.Client = client.New(k.socket)
	k.start()
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
		if o, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", disk, out).CombinedOutput(); err != nil {
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
		im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: fmt.Sprintf("bench-%d", i), Disks: []api.Disk{{Path: disk, Format: "raw"}}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.WaitImage(ctx, im.ID, nil); err != nil {
			b.Fatal(err)
		}
		kilnTotal += time.Since(start)

		b.StopTimer()
		if err := k.DeregisterImage(ctx, im.ID); err != nil {
			b.Fatal(err)
		}
		if _, err := k.GC(ctx); err != nil {
			b.Fatal(err)
		}
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

// BenchmarkImageLsFilter10k lists images with a name filter in a store of 10,000
// images, through the API as `kiln image ls --filter name=...` does, and reports the
// median latency (target ≤ 50 ms).
func BenchmarkImageLsFilter10k(b *testing.B) {
	// The records are written straight into a store on tmpfs (an fsync per record on a
	// disk would make the setup, not the listing, the slow part), then kilnd opens it.
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = b.TempDir()
	}
	rootDir, err := os.MkdirTemp(base, "kiln-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(rootDir) })
	s, err := images.Open(context.Background(), rootDir)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		im := &images.Image{
			ID: images.NewID(images.ImagePrefix), Name: fmt.Sprintf("image-%05d", i), OwnerID: "root",
			State: images.StateAvailable, CreationDate: time.Now(), Tags: map[string]string{"n": fmt.Sprint(i)},
			Config: images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceType: "ebs", RootDeviceName: "/dev/vda",
				BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &images.EBS{SnapshotID: images.NewID(images.SnapshotPrefix), VolumeSize: 8}}}},
		}
		if err := s.CreateImage(im); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
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
