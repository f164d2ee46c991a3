package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"kiln/daemon/api"
	"kiln/daemon/client"

	"kiln/internal/kilntest"
)

// createImage makes an image of an instance and waits for it.
func createImage(t *testing.T, k *kilnd, instance, name string) api.Image {
	t.Helper()
	ctx := guestCtx(t) // a create of a running instance waits for its guest to power off
	im, err := k.CreateImage(ctx, instance, api.CreateImageRequest{Name: name})
	if err != nil {
		t.Fatalf("create image %s: %v", name, err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatalf("create image %s: %v\n%s", name, err, k.Evidence(instance))
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
	if _, err := k.DeregisterImage(ctx, im.ID); err != nil {
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

	// Refusals: a terminated instance, a name in use, a live capture of a terminated one.
	if _, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: "from-terminated"}); !isCode(err, api.CodeIncorrectState) {
		t.Errorf("create from a terminated instance: %v", err)
	}
	if _, err := k.CreateImage(ctx, fromCopy.ID, api.CreateImageRequest{Name: "with-data-copy"}); !isCode(err, api.CodeInvalidAMINameDuplicate) {
		t.Errorf("create with a name in use: %v", err)
	}
	if _, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: "live", NoReboot: true}); !isCode(err, api.CodeIncorrectState) {
		t.Errorf("create --no-reboot of a terminated instance: %v", err)
	}
}

// TestCreateImageLive: --no-reboot captures a running instance without stopping it: the
// new image has the change, the source's console shows a single boot, and the source
// keeps working (and its data) through a stop and start and a second live capture.
func TestCreateImageLive(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	src := runOne(t, k, api.RunInstancesRequest{Image: base.ID, InstanceType: "nano",
		UserData: []byte("#!/bin/sh\necho 2 > /etc/kiln-gen\nsync\n")})
	waitState(t, k, src.ID, "ready")
	live := func(name string) api.Image {
		im, err := k.CreateImage(ctx, src.ID, api.CreateImageRequest{Name: name, NoReboot: true})
		if err != nil {
			t.Fatal(err)
		}
		if im, err = k.WaitImage(guestCtx(t), im.ID, nil); err != nil {
			t.Fatalf("live capture: %v\n%s", err, k.Evidence(src.ID))
		}
		return im
	}
	im := live("live-1")
	if got, _ := k.Instance(ctx, src.ID); got.State != "running" || got.PID != src.PID {
		t.Errorf("source after a live capture: %+v", got)
	}
	if n := strings.Count(console(t, k, src.ID), "KILN-GUEST boot"); n != 1 {
		t.Errorf("the source booted %d times during a live capture", n)
	}
	child := runOne(t, k, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
	waitState(t, k, child.ID, "ready")
	if con := console(t, k, child.ID); !strings.Contains(con, "KILN-GUEST boot gen=2") {
		t.Errorf("the live image lacks the change:\n%s", con)
	}
	// A second live capture on top of the first; then the source stops and starts on
	// the store's layers with its data.
	live("live-2")
	if _, err := k.InstanceAction(ctx, src.ID, "stop", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, src.ID, "stopped")
	if _, err := k.InstanceAction(ctx, src.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, src.ID, "ready")
	// Its first boot printed gen=0 (the user data wrote 2 after), the second gen=2.
	if con := console(t, k, src.ID); strings.Count(con, "KILN-GUEST boot gen=2") != 1 || strings.Count(con, "KILN-GUEST boot") != 2 {
		t.Errorf("the source after live captures and a restart:\n%s", con)
	}
	// The frozen files went when QEMU let go of them: the store's layers stand in.
	if frozen, _ := filepath.Glob(filepath.Join(k.Root, "instances", src.ID, "*.frozen-*")); len(frozen) != 0 {
		t.Errorf("frozen files left after a restart: %v", frozen)
	}
	// A default capture after live ones still has everything.
	third := createImage(t, k, src.ID, "after-live")
	last := runOne(t, k, api.RunInstancesRequest{Image: third.ID, InstanceType: "nano"})
	waitState(t, k, last.ID, "ready")
	if con := console(t, k, last.ID); !strings.Contains(con, "KILN-GUEST boot gen=2") {
		t.Errorf("default capture after live ones:\n%s", con)
	}
}

// TestProgress: while a 1 GiB register runs, the image says how far it has come:
// values that move from 0 towards the disk's size, never back.
func TestProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1 GiB disk")
	}
	k := newKilnd(t)
	ctx := ctxT(t)
	im := startBigRegister(t, k)
	var seen []api.Progress
	final, err := k.WaitImage(ctx, im.ID, func(im api.Image) {
		if im.Progress != nil {
			seen = append(seen, *im.Progress)
		}
	})
	if err != nil || final.Progress != nil {
		t.Fatalf("register: %+v, %v", final, err)
	}
	progressSeen(seen).check(t, "register", 1<<30)
}

// progressSeen is what a wait through the client saw of an image's progress.
type progressSeen []api.Progress

// check fails the test when the progress seen of an image that wrote least bytes or
// more is not as a bar needs it: the total is the image's once bytes are counted
// (before, it may be 0, or measured again when the capture starts), what is done
// never goes back nor past it, and some value lies strictly between 0 and the
// total, so a bar moves rather than jumping from 0 to gone.
func (seen progressSeen) check(t *testing.T, what string, least int64) {
	t.Helper()
	if len(seen) == 0 {
		t.Fatalf("%s: no progress seen", what)
	}
	final := seen[len(seen)-1].BytesTotal
	moved := false
	for i, p := range seen {
		switch {
		case p.BytesTotal != final && p.BytesDone > 0:
			t.Errorf("%s: progress %d %+v: the total changed once bytes were counted (last %d)", what, i, p, final)
		case p.BytesDone > p.BytesTotal || i > 0 && p.BytesDone < seen[i-1].BytesDone:
			t.Errorf("%s: progress %d %+v goes back or past the total (all: %+v)", what, i, p, seen)
		}
		moved = moved || p.BytesDone > 0 && p.BytesDone < p.BytesTotal
	}
	if final < least {
		t.Errorf("%s: total %d; want at least the %d bytes written", what, final, least)
	}
	if !moved {
		t.Errorf("%s: no progress between 0 and the total in %d values: %+v", what, len(seen), seen)
	}
}

// TestCreateProgress: an image created of a running test guest with 1 GiB written to
// a volume, by default (stopped, captured, started again) and live (--no-reboot, its
// files frozen under new tops: their total was 0), says through the client's wait how
// far it has come: values that move from 0 towards a total that counts the 1 GiB.
func TestCreateProgress(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: base.ID, InstanceType: "nano",
		Volumes: []api.VolumeSpec{{DeviceName: "/dev/vdb", SizeGiB: 2}}})
	data := filepath.Join(k.Root, "instances", inst.ID, inst.BlockDeviceMappings[1].VolumeID+".qcow2")
	for i, live := range []bool{false, true} {
		// 1 GiB more in the volume's top, written while the instance is stopped.
		if _, err := k.InstanceAction(ctx, inst.ID, "stop", true); err != nil {
			t.Fatal(err)
		}
		waitState(t, k, inst.ID, "stopped")
		if out, err := kilntest.Command(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P %d 0 1G", 0x61+i), data).CombinedOutput(); err != nil {
			t.Fatalf("write 1 GiB: %v %s", err, out)
		}
		if _, err := k.InstanceAction(ctx, inst.ID, "start", false); err != nil {
			t.Fatal(err)
		}
		waitState(t, k, inst.ID, "ready") // acpid answers the power button at once
		what := map[bool]string{false: "default create", true: "live create"}[live]
		im, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: fmt.Sprintf("progress-%d", i), NoReboot: live})
		if err != nil {
			t.Fatal(err)
		}
		var seen progressSeen
		final, err := k.WaitImage(ctx, im.ID, func(im api.Image) {
			if im.Progress != nil {
				seen = append(seen, *im.Progress)
			}
		})
		if err != nil || final.State != "available" || final.Progress != nil {
			t.Fatalf("%s: %+v, %v", what, final, err)
		}
		seen.check(t, what, 1<<30)
		waitState(t, k, inst.ID, "ready")
	}
}

// TestKillDuringCreate: kilnd killed with SIGKILL during a create with a 1 GiB delta, at
// each phase of it, polled for (never a blind sleep) and proven from what the crash left:
// while the running source instance stops for the create; while the 1 GiB layer is
// being ingested, of a source that was running and of a stopped one; once the image is
// committed, while its running source restarts and of a stopped source. After each
// restart no image is available with missing content, the instance is running or
// stopped (never lost) with its data intact, and gc leaves no ingest behind.
func TestKillDuringCreate(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: base.ID, InstanceType: "nano",
		Volumes: []api.VolumeSpec{{DeviceName: "/dev/vdb", SizeGiB: 2}}})
	if _, err := k.InstanceAction(ctx, inst.ID, "stop", true); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "stopped")
	data := filepath.Join(k.Root, "instances", inst.ID, inst.BlockDeviceMappings[1].VolumeID+".qcow2")
	if out, err := kilntest.Command(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x6b 0 1G", data).CombinedOutput(); err != nil {
		t.Fatalf("write the 1 GiB delta: %v %s", err, out)
	}
	// The ingest phases come before the committed ones: once captured, the 1 GiB is in
	// the store and the next create's delta is small.
	for round, tc := range []struct {
		phase   string // stopping, ingest or committed
		running bool   // the source is running (and ready) when the create starts
	}{{"stopping", true}, {"ingest", true}, {"ingest", false}, {"committed", true}, {"committed", false}} {
		got, err := k.Instance(ctx, inst.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.running && got.State == "stopped":
			if _, err := k.InstanceAction(ctx, inst.ID, "start", false); err != nil {
				t.Fatal(err)
			}
			fallthrough
		case tc.running:
			// Ready: acpid runs, so the power button stops it at once (before, the
			// create would sit in the 30 s stop wait).
			waitState(t, k, inst.ID, "ready")
		case got.State != "stopped":
			if _, err := k.InstanceAction(ctx, inst.ID, "stop", true); err != nil {
				t.Fatal(err)
			}
			waitState(t, k, inst.ID, "stopped")
		}
		im, err := k.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: "crash-" + strconv.Itoa(round)})
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("round %d (%s, source %s)", round, tc.phase, map[bool]string{true: "running", false: "stopped"}[tc.running])
		k.awaitPhase(t, what, tc.phase, inst.ID, im.ID)
		k.Kill()
		// What the crash left proves where it hit.
		switch tc.phase {
		case "stopping":
			if ev := lastEvent(t, k.Root, inst.ID); ev != "stopping" {
				t.Errorf("%s: the instance's last event is %q; the kill missed the stop", what, ev)
			}
			if n := k.layerIngest(im.ID); n != 0 {
				t.Errorf("%s: an ingest of %d bytes; the kill missed the stop", what, n)
			}
		case "ingest":
			// A finished ingest is committed and gone: one still there was cut short.
			if n := k.layerIngest(im.ID); n < 64<<20 {
				t.Errorf("%s: the 1 GiB layer's ingest holds %d bytes; the kill missed the ingest", what, n)
			}
		}
		k.Start()

		got, err = k.Instance(ctx, inst.ID)
		if err != nil || got.State != "running" && got.State != "stopped" && got.State != "stopping" {
			t.Fatalf("%s: the instance after the crash: %+v, %v", what, got, err)
		}
		if got.State == "stopping" {
			waitState(t, k, inst.ID, "stopped")
		}
		// The image ended as its phase says: failed before the commit, available after.
		want := map[string]string{"stopping": "failed", "ingest": "failed", "committed": "available"}[tc.phase]
		if cur, err := k.Image(ctx, im.ID); err != nil || cur.State != want {
			t.Errorf("%s: image %s after the restart: %q (%s), %v; want %s", what, im.ID, cur.State, cur.StateReason, err, want)
		}
		// Every available image's content is all there and intact.
		blobs := k.blobs()
		images, _ := k.Images(ctx, client.ListImagesOptions{Filters: []string{"state=available"}})
		for _, im := range images {
			if _, ok := blobs[strings.TrimPrefix(im.ManifestDigest, "sha256:")]; !ok {
				t.Errorf("%s: available image %s has no manifest blob", what, im.ID)
			}
			for _, m := range im.BlockDeviceMappings {
				sn, err := k.Snapshot(ctx, m.EBS.SnapshotID)
				if err != nil {
					t.Errorf("%s: image %s: %v", what, im.ID, err)
					continue
				}
				for _, l := range sn.Chain {
					if _, ok := blobs[strings.TrimPrefix(l, "sha256:")]; !ok {
						t.Errorf("%s: image %s lacks layer %s", what, im.ID, l)
					}
				}
			}
		}
		if _, err := k.GC(ctx); err != nil {
			t.Fatal(err)
		}
		if in := k.ingests(); len(in) != 0 {
			t.Errorf("%s: ingests after gc: %v", what, in)
		}
		t.Logf("%s: instance %s after the restart", what, got.State)
	}
	// The instance's data survived every crash.
	if got, _ := k.Instance(ctx, inst.ID); got.State == "running" {
		k.InstanceAction(ctx, inst.ID, "stop", true)
	}
	waitState(t, k, inst.ID, "stopped")
	if out, err := kilntest.Command(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x6b 0 1G", data).CombinedOutput(); err != nil || strings.Contains(string(out), "fail") {
		t.Errorf("the 1 GiB on the data volume after the crashes: %v %s", err, out)
	}
	if _, err := k.InstanceAction(ctx, inst.ID, "start", false); err != nil {
		t.Fatal(err)
	}
	waitState(t, k, inst.ID, "ready")
}

// awaitPhase polls (within guestDeadline) until the create of image im from instance id
// is in phase: "stopping" (the instance stops for it), "ingest" (the 1 GiB layer of its
// second volume is partly written) or "committed" (the image is available).
func (k *kilnd) awaitPhase(t *testing.T, what, phase, id, im string) {
	t.Helper()
	ctx := guestCtx(t)
	var inst api.Instance
	var image api.Image
	for {
		var err error
		if inst, err = k.Instance(ctx, id); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if image, err = k.Image(ctx, im); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		switch {
		case phase == "stopping" && inst.State == "stopping",
			phase == "ingest" && k.layerIngest(im) >= 64<<20,
			phase == "committed" && image.State == "available":
			return
		case image.State == "failed" || phase != "committed" && image.State == "available":
			t.Fatalf("%s: the create went past the phase: image %s %s (%s)\n%s", what, im, image.State, image.StateReason, k.Evidence(id))
		case ctx.Err() != nil:
			t.Fatalf("%s: not there within %s: instance %s, image %s, ingest %d bytes\n%s",
				what, guestDeadline, inst.State, image.State, k.layerIngest(im), k.Evidence(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// layerIngest is how many bytes the largest ingest of a layer of a create of image im
// holds (0 when there is none): the store names an ingest's directory by the digest of
// its ref, create-IMAGE-VOLUME-FILE.
func (k *kilnd) layerIngest(im string) int64 {
	var n int64
	for i := range 2 {
		for j := range 4 {
			ref := sha256.Sum256([]byte("create-" + im + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)))
			if st, err := os.Stat(filepath.Join(k.Root, "content", "ingest", hex.EncodeToString(ref[:]), "data")); err == nil {
				n = max(n, st.Size())
			}
		}
	}
	return n
}

// lastEvent is the last state change ("from>to") recorded for an instance, read from
// the store of a kilnd that is not running.
func lastEvent(t *testing.T, root, id string) string {
	t.Helper()
	states := instanceStates(t, root, id)
	if len(states) == 0 {
		return ""
	}
	return states[len(states)-1]
}

// instanceStates are the states an instance entered, in order, as kilnd's event log
// (read from a stopped or killed kilnd's meta.db) has them.
func instanceStates(t *testing.T, root, id string) []string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var states []string
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("events")).ForEach(func(_, v []byte) error {
			var ev api.Event
			var detail api.InstanceStateChange
			if json.Unmarshal(v, &ev) == nil && ev.DetailType == api.DetailTypeInstance && json.Unmarshal(ev.Detail, &detail) == nil && detail.InstanceID == id {
				states = append(states, detail.State)
			}
			return nil
		})
	})
	return states
}

// TestVolumes: a volume made from a snapshot, hot-plugged into a running instance,
// appears as a disk in the guest; a taken device is refused; rm is refused while it is
// attached; detached, it can go; its layers are kept from gc while it exists.
func TestVolumes(t *testing.T) {
	k, base := guestKilnd(t)
	ctx := ctxT(t)
	inst := runOne(t, k, api.RunInstancesRequest{Image: base.ID, InstanceType: "nano", UserData: []byte(
		"#!/bin/sh\n(while [ ! -b /dev/vdc ]; do sleep 0.2; done; echo KILN-GUEST saw vdc > /dev/ttyS0) &\n")})
	waitState(t, k, inst.ID, "ready")

	snap := base.BlockDeviceMappings[0].EBS.SnapshotID
	sn, err := k.Snapshot(ctx, snap) // its layers are what gc must keep for the volume
	if err != nil || len(sn.Chain) == 0 {
		t.Fatalf("snapshot %s: %+v, %v", snap, sn, err)
	}
	v, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SnapshotID: snap})
	if err != nil || v.State != "available" || v.SizeGiB != 1 || v.SnapshotID != snap {
		t.Fatalf("create from snapshot: %+v, %v", v, err)
	}
	if _, err := k.AttachVolume(ctx, v.ID, inst.ID, "/dev/vda"); !isCode(err, api.CodeInvalidParameterValue) {
		t.Errorf("attach to a taken device: %v", err)
	}
	// The seed is /dev/vdb; the volume goes to the first free device, /dev/vdc.
	att, err := k.AttachVolume(ctx, v.ID, inst.ID, "/dev/vdc")
	if err != nil || att.State != "in-use" || att.InstanceID != inst.ID {
		t.Fatalf("attach: %+v, %v", att, err)
	}
	waitConsole(t, k, inst.ID, "KILN-GUEST saw vdc", 1)
	if _, err := k.DeleteVolume(ctx, v.ID); !isCode(err, api.CodeVolumeInUse) {
		t.Errorf("rm of an attached volume: %v", err)
	}
	// A blank one plugged in and out of the running guest.
	blank, err := k.CreateVolume(ctx, api.CreateVolumeRequest{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Two attaches of it at once: one gets the first free device, the other VolumeInUse
	// (once both reached QEMU, and its write lock refused the second with a 500).
	var attaches [2]struct {
		v   api.Volume
		err error
	}
	var wg sync.WaitGroup
	for i := range attaches {
		wg.Go(func() { attaches[i].v, attaches[i].err = k.AttachVolume(ctx, blank.ID, inst.ID, "") })
	}
	wg.Wait()
	if attaches[0].err != nil {
		attaches[0], attaches[1] = attaches[1], attaches[0]
	}
	if got, err := attaches[0].v, attaches[0].err; err != nil || got.DeviceName != "/dev/vdd" {
		t.Fatalf("attach to the first free device: %+v, %v", got, err)
	}
	if err := attaches[1].err; !isCode(err, api.CodeVolumeInUse) {
		t.Errorf("the second of two attaches at once: %v; want VolumeInUse", err)
	}
	if got, err := k.DetachVolume(ctx, blank.ID); err != nil || got.State != "available" {
		t.Fatalf("detach from a running instance: %+v, %v", got, err)
	}
	if _, err := k.DeleteVolume(ctx, blank.ID); err != nil {
		t.Fatal(err)
	}
	// The image goes; the volume keeps its layers from gc.
	k.InstanceAction(ctx, inst.ID, "terminate", true)
	waitState(t, k, inst.ID, "terminated")
	if got, _ := k.Volume(ctx, v.ID); got.State != "available" {
		t.Errorf("a standalone volume after its instance terminated: %+v", got)
	}
	if _, err := k.DeregisterImage(ctx, base.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.GC(ctx); err != nil {
		t.Fatal(err)
	}
	blobs := k.blobs()
	for _, l := range sn.Chain {
		if _, ok := blobs[strings.TrimPrefix(l, "sha256:")]; !ok {
			t.Errorf("gc removed layer %s, which the volume stands on", l)
		}
	}
	if _, err := k.DetachVolume(ctx, v.ID); !isCode(err, api.CodeIncorrectState) {
		t.Errorf("detach of a detached volume: %v", err)
	}
	if _, err := k.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if res, err := k.GC(ctx); err != nil || len(k.blobs()) != 0 {
		t.Errorf("gc after the volume went: %+v, %v, %d blobs left", res, err, len(k.blobs()))
	}
}
