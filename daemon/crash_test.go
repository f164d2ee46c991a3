package daemon_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"

	"kiln/internal/kilntest"
)

// randomDisk writes a raw disk of size bytes of random data.
func randomDisk(t testing.TB, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "random.raw")
	out, err := kilntest.Command(t, "sh", "-c", "head -c "+itoa(size)+" /dev/urandom > "+p).CombinedOutput()
	if err != nil {
		t.Fatalf("make random disk: %v\n%s", err, out)
	}
	return p
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// startBigRegister starts registering a 1 GiB raw disk of random data.
func startBigRegister(t *testing.T, k *kilnd) api.Image {
	t.Helper()
	if testing.Short() {
		t.Skip("writes a 1 GiB disk")
	}
	disk := randomDisk(t, t.TempDir(), 1<<30)
	im, err := k.RegisterImage(ctxT(t), api.RegisterImageRequest{Name: "big", Disks: []api.Disk{{Name: disk, Format: "raw"}}})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// ingestBytes is how much the content store's ingests hold.
func (k *kilnd) ingestBytes() int64 {
	var n int64
	for _, in := range k.ingests() {
		if st, err := os.Stat(filepath.Join(k.Root, "content", "ingest", in, "data")); err == nil {
			n += st.Size()
		}
	}
	return n
}

// TestKillDuringRegister: kilnd killed with SIGKILL while it registers a 1 GiB disk.
// After a restart the image is failed (never available with missing content) and gc
// removes the abandoned ingest.
func TestKillDuringRegister(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1 GiB disk")
	}
	k := newKilnd(t)
	ctx := ctxT(t)
	im := startBigRegister(t, k)
	// Kill it once the layer is partly written.
	kilntest.Poll(t, time.Minute, "the ingest at 64 MiB", func() bool { return k.ingestBytes() >= 64<<20 }, k.Log.String)
	k.Kill()
	if len(k.ingests()) == 0 {
		t.Fatal("no ingest left to test with")
	}
	k.Start()

	got, err := k.Image(ctx, im.ID)
	if err != nil || got.State != "failed" || got.StateReason == "" {
		t.Fatalf("image after the crash: %+v, %v", got, err)
	}
	if list, _ := k.Images(ctx, client.ListImagesOptions{Filters: []string{"state=available"}}); len(list) != 0 {
		t.Errorf("available images after the crash: %+v", list)
	}
	res, err := k.GC(ctx)
	if err != nil || res.IngestsRemoved != 1 {
		t.Errorf("gc: %+v, %v", res, err)
	}
	if in := k.ingests(); len(in) != 0 {
		t.Errorf("ingests left after gc: %v", in)
	}
	k.blobs() // whatever is left hashes to its name

	// The failed image can be deregistered and the name used again.
	if _, err := k.DeregisterImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	small := randomDisk(t, t.TempDir(), 1<<20)
	again, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "big", Disks: []api.Disk{{Name: small, Format: "raw"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.WaitImage(ctx, again.ID, nil); err != nil {
		t.Fatal(err)
	}
}
