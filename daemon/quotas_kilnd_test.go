package daemon_test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// quotaKilnd starts kilnd with the quotas given (the settings file's "quotas" value).
func quotaKilnd(t *testing.T, quotas string) *kilnd {
	t.Helper()
	d := shortDir(t)
	if err := os.WriteFile(filepath.Join(d, "kilnd.json"), []byte(`{"quotas": `+quotas+`}`), 0o600); err != nil {
		t.Fatal(err)
	}
	k := kilndIn(t, d, "debug")
	k.Start()
	return k
}

// TestImageQuotaConcurrent sends 12 registers at once against a quota of 3 images:
// exactly 3 are made, the other 9 are refused with QuotaExceeded. (Before the count was
// reserved, each register passed the check while the others were still inspecting
// their disks, and 11 or 12 images were made.)
func TestImageQuotaConcurrent(t *testing.T) {
	k := quotaKilnd(t, `{"default": {"images": 3}}`)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	const n = 12
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// A client each: a register passes its files on a connection of its own.
			_, errs[i] = client.New(k.Socket).RegisterImage(ctx, api.RegisterImageRequest{
				Name: "quota-" + string(rune('a'+i)), Disks: []api.Disk{{Name: disk, Format: "raw"}}})
		})
	}
	wg.Wait()
	made, refused := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			made++
		case isCode(err, api.CodeQuotaExceeded):
			refused++
		default:
			t.Errorf("register %d: %v", i, err)
		}
	}
	ims, err := k.Images(ctx, client.ListImagesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if made != 3 || refused != n-3 || len(ims) != 3 {
		t.Errorf("%d registers against a quota of 3: %d accepted, %d refused, %d images; want 3, %d, 3", n, made, refused, len(ims), n-3)
	}
}

// TestVolumeQuota refuses a volume past the count or size quota before any file is
// made, and counts a deleted volume no more.
func TestVolumeQuota(t *testing.T) {
	k := quotaKilnd(t, `{"default": {"volumes": 2, "volumeGiB": 10}}`)
	ctx := ctxT(t)
	files := func() []string {
		m, _ := filepath.Glob(filepath.Join(k.Root, "volumes", "*"))
		return m
	}
	v1, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 3}); !isCode(err, api.CodeQuotaExceeded) {
		t.Errorf("3 GiB more with 8 of 10 in use: %v; want QuotaExceeded", err)
	}
	if _, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 2}); err != nil {
		t.Fatalf("2 GiB more with 8 of 10 in use: %v", err)
	}
	if _, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 16384}); !isCode(err, api.CodeQuotaExceeded) {
		t.Errorf("a third volume (of 2): %v; want QuotaExceeded", err)
	}
	if f := files(); len(f) != 2 {
		t.Errorf("volume files after two refusals: %v; want the two volumes' only", f)
	}
	if _, err := k.DeleteVolume(ctx, v1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 7}); err != nil {
		t.Errorf("7 GiB after deleting 8: %v", err)
	}

	// A launch counts the volumes it would make (the image's root, one asked for) and
	// is refused before it makes anything: 2 volumes, 9 GiB, are in use.
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "vol-quota", Disks: []api.Disk{{Name: disk, Format: "raw"}}})
	if err != nil {
		t.Fatal(err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"}); !isCode(err, api.CodeQuotaExceeded) || !strings.Contains(err.Error(), "volumes is 2, 2 in use") {
		t.Errorf("a launch past the volume count: %v; want QuotaExceeded", err)
	}
	if d := k.instanceDirs(); len(d) != 0 {
		t.Errorf("a refused launch left instance directories %v", d)
	}
}

// TestStoredQuota: a register is admitted by the bytes its disks take, reserved while it
// runs, and the layers made count afterwards: of two registers of 2 MiB at once against 3
// MiB, one is made; a third is refused once the first is stored.
func TestStoredQuota(t *testing.T) {
	k := quotaKilnd(t, `{"default": {"storedMiB": 3}}`)
	ctx := ctxT(t)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	random := make([]byte, 2<<20)
	rand.Read(random) // incompressible, and every block allocated
	if err := os.WriteFile(disk, random, 0o600); err != nil {
		t.Fatal(err)
	}
	register := func(name string) (api.Image, error) {
		return client.New(k.Socket).RegisterImage(ctx, api.RegisterImageRequest{Name: name, Disks: []api.Disk{{Name: disk, Format: "raw"}}})
	}
	var ims [2]api.Image
	var errs [2]error
	var wg sync.WaitGroup
	for i := range ims {
		wg.Go(func() { ims[i], errs[i] = register("stored-" + string(rune('a'+i))) })
	}
	wg.Wait()
	if errs[0] != nil {
		ims[0], ims[1], errs[0], errs[1] = ims[1], ims[0], errs[1], errs[0]
	}
	if errs[0] != nil || !isCode(errs[1], api.CodeQuotaExceeded) {
		t.Fatalf("two registers of 2 MiB at once against 3 MiB: %v, %v; want one made, one QuotaExceeded", errs[0], errs[1])
	}
	if _, err := k.WaitImage(ctx, ims[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := register("stored-c"); !isCode(err, api.CodeQuotaExceeded) || !strings.Contains(err.Error(), "stored layers (MiB) is 3,") {
		t.Errorf("2 MiB more with a 2 MiB layer stored: %v; want QuotaExceeded", err)
	}
}

// TestImagesInProgressQuota: a user makes at most imagesInProgress images at once (each
// holds a conversion); one more is refused until one of them ends.
func TestImagesInProgressQuota(t *testing.T) {
	k := quotaKilnd(t, `{"default": {"imagesInProgress": 1}}`)
	big := startBigRegister(t, k)
	small := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(small, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	req := api.RegisterImageRequest{Name: "small", Disks: []api.Disk{{Name: small, Format: "raw"}}}
	if _, err := k.RegisterImage(ctx, req); !isCode(err, api.CodeQuotaExceeded) || !strings.Contains(err.Error(), "images being made at once is 1, 1 in use") {
		t.Errorf("a second register while one runs: %v; want QuotaExceeded", err)
	}
	if _, err := k.WaitImage(ctx, big.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RegisterImage(ctx, req); err != nil {
		t.Errorf("a register once the first ended: %v", err)
	}
}
