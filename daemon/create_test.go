package daemon_test

import (
	"strings"
	"testing"

	"kiln/daemon/api"
)

// createImage makes an image of an instance and waits for it.
func createImage(t *testing.T, k *kilnd, instance, name string) api.Image {
	t.Helper()
	ctx := ctxT(t)
	im, err := k.CreateImage(ctx, instance, api.CreateImageRequest{Name: name})
	if err != nil {
		t.Fatalf("create image %s: %v", name, err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatalf("create image %s: %v\n%s", name, err, k.log)
	}
	return im
}

// TestCreateImageGenerations: an image of an image of an image boots with all three
// changes, each instance is running again after its image is made, and the lineage is
// on each image.
func TestCreateImageGenerations(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	img := base
	for gen := 1; gen <= 3; gen++ {
		ud := "#!/bin/sh\nprintf " + string(rune('0'+gen)) + " >> /etc/kiln-gen\n"
		inst := runOne(t, k, api.RunInstancesRequest{Image: img.ID, InstanceType: "nano", UserData: []byte(ud)})
		waitState(t, k, inst.ID, "ready")
		next := createImage(t, k, inst.ID, "gen-"+string(rune('0'+gen)))
		if next.SourceInstanceID != inst.ID || next.SourceImageID != img.ID || len(next.BlockDeviceMappings) != 1 {
			t.Errorf("lineage of %s: %+v", next.Name, next)
		}
		// The source instance is running again, booted once more.
		again := waitState(t, k, inst.ID, "ready")
		if again.State != "running" || strings.Count(console(t, k, inst.ID), "KILN-GUEST ready") != 2 {
			t.Errorf("source instance after create: %s\n%s", again.State, console(t, k, inst.ID))
		}
		k.InstanceAction(ctx, inst.ID, "terminate", true)
		img = next
	}
	last := runOne(t, k, api.RunInstancesRequest{Image: img.ID, InstanceType: "nano"})
	waitState(t, k, last.ID, "ready")
	if con := console(t, k, last.ID); !strings.Contains(con, "KILN-GUEST boot gen=123") {
		t.Errorf("the third generation does not have all three changes:\n%s", con)
	}
	k.blobs() // every blob, old and new layers, hashes to its name
}

// TestCreateImageCostAndCopy: 32 MiB written in the guest grow the store by at most 40
// MiB; a copy adds no bytes and outlives its original.
func TestCreateImageCostAndCopy(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: base.ID, InstanceType: "nano",
		UserData: []byte("#!/bin/sh\ndd if=/dev/urandom of=/root/random bs=1M count=32 2>/dev/null\necho 5 > /etc/kiln-gen\nsync\n")})
	waitState(t, k, inst.ID, "ready")
	before := total(k.blobs())
	im := createImage(t, k, inst.ID, "with-data")
	if grown := total(k.blobs()) - before; grown > 40<<20 || grown < 32<<20 {
		t.Errorf("32 MiB written grew the store by %d MiB", grown>>20)
	}

	blobs := k.blobs()
	cp, err := k.CopyImage(ctx, im.ID, api.CopyImageRequest{Name: "with-data-copy"})
	if err != nil || cp.State != "available" || cp.CopiedFromID != im.ID || cp.ManifestDigest != im.ManifestDigest {
		t.Fatalf("copy: %+v, %v", cp, err)
	}
	if after := k.blobs(); len(after) != len(blobs) || total(after) != total(blobs) {
		t.Errorf("copy grew the store: %d → %d bytes", total(blobs), total(after))
	}
	if _, err := k.CopyImage(ctx, im.ID, api.CopyImageRequest{Name: "with-data-copy"}); !isCode(err, api.CodeInvalidAMINameDuplicate) {
		t.Errorf("copy to a name in use: %v", err)
	}
	if err := k.DeregisterImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "terminate", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "terminated")
	if _, err := k.GC(ctx); err != nil {
		t.Fatal(err)
	}
	fromCopy := runOne(t, k, api.RunInstancesRequest{Image: cp.ID, InstanceType: "nano"})
	waitState(t, k, fromCopy.ID, "ready")
	if con := console(t, k, fromCopy.ID); !strings.Contains(con, "KILN-GUEST boot gen=5") {
		t.Errorf("the copy lost the change:\n%s", con)
	}

	// Refusals: a terminated instance, a name in use, --no-reboot (not built).
	if _, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: "from-terminated"}); !isCode(err, api.CodeIncorrectState) {
		t.Errorf("create from a terminated instance: %v", err)
	}
	if _, err := k.CreateImage(ctx, fromCopy.ID, api.CreateImageRequest{Name: "with-data-copy"}); !isCode(err, api.CodeInvalidAMINameDuplicate) {
		t.Errorf("create with a name in use: %v", err)
	}
	if _, err := k.CreateImage(ctx, fromCopy.ID, api.CreateImageRequest{Name: "live", NoReboot: true}); !isCode(err, api.CodeUnsupportedOperation) {
		t.Errorf("create --no-reboot: %v", err)
	}
}
