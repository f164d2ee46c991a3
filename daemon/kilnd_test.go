package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/hypervisor"

	"kiln/internal/kilntest"
)

// kilndBin and kilnBin are the binaries the tests run, built once by TestMain in a
// directory every user may read (the accounts tests run kiln as other users).
var kilndBin, kilnBin string

// testAccel is the accelerator the test kilnds are given: the probe's choice, made
// once by TestMain, so that each of the many kilnds a run starts does not probe again
// (on a host whose KVM runs nothing, each probe spins a vCPU for its whole deadline).
// Where KVM works, the tests use it.
var testAccel string

func TestMain(m *testing.M) {
	if os.Getenv("KILN_HAMMER_SOCKET") != "" { // a helper process: it runs no kilnd
		os.Exit(m.Run())
	}
	// Built with -race when the tests run under the race detector: the daemon is
	// checked, not only the test process.
	dir, err := kilntest.Build("kiln/cmd/kilnd", "kiln/cmd/kiln")
	if err != nil {
		fmt.Fprintf(os.Stderr, "build kilnd and kiln: %v\n", err)
		os.Exit(1)
	}
	kilndBin, kilnBin = filepath.Join(dir, "kilnd"), filepath.Join(dir, "kiln")
	accel, why, err := hypervisor.Prober{Qemu: "qemu-system-x86_64", KVMDevice: "/dev/kvm"}.Choose(context.Background(), hypervisor.AccelAuto)
	if err != nil {
		fmt.Fprintf(os.Stderr, "choose the accelerator: %v\n", err)
		os.Exit(1)
	}
	testAccel = accel
	fmt.Fprintf(os.Stderr, "test kilnds use %s: %s\n", accel, why)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guestDeadline bounds every wait on a guest (and on an operation that waits for one).
const guestDeadline = kilntest.GuestDeadline

// guestCtx is a context for one wait on a guest.
func guestCtx(t testing.TB) context.Context { return kilntest.GuestContext(t) }

// kilnd is one kilnd process of a test (kilntest's harness) with a client of its
// socket.
type kilnd struct {
	*kilntest.Kilnd
	*client.Client
}

// kilndAt makes (but does not start) a kilnd with its root and socket, its settings
// file beside the root, and the accelerator testAccel.
func kilndAt(t testing.TB, root, socket, logLevel string) *kilnd {
	c := client.New(socket)
	return &kilnd{Kilnd: &kilntest.Kilnd{TB: t, Bin: kilndBin, Root: root, Socket: socket,
		Config: filepath.Join(filepath.Dir(root), "kilnd.json"), LogLevel: logLevel, Accel: testAccel,
		Ready: func(ctx context.Context) error { _, err := c.Info(ctx); return err }}, Client: c}
}

// shortDir and publicDir: kilntest's.
func shortDir(t testing.TB) string  { return kilntest.ShortDir(t) }
func publicDir(t testing.TB) string { return kilntest.PublicDir(t) }

// kilndIn makes (but does not start) a kilnd with its root, socket and settings file
// in dir.
func kilndIn(t testing.TB, dir, logLevel string) *kilnd {
	return kilndAt(t, filepath.Join(dir, "root"), filepath.Join(dir, "s"), logLevel)
}

// newKilnd starts kilnd on a fresh root and waits until it serves.
func newKilnd(t *testing.T) *kilnd {
	k := kilndIn(t, shortDir(t), "debug")
	k.Start()
	return k
}

// ctxT is the context of a test's requests that do not wait on a guest (those have
// guestCtx): a bound on the whole test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// registerGuest registers the test guest under name and waits for it.
func registerGuest(t testing.TB, k *kilnd, name string) api.Image {
	t.Helper()
	g := kilntest.GuestFiles(t)
	ctx := guestCtx(t)
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{
		Name:    name,
		Disks:   []api.Disk{{Name: g.Disk, Format: "qcow2"}},
		Kernel:  g.Kernel,
		Initrd:  g.Initrd,
		Cmdline: g.Cmdline,
	})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatalf("register %s: %v\nkilnd log:\n%s", name, err, kilntest.Tail(k.Log.String(), 40))
	}
	return im
}

// blobs maps each blob of the store to its size and checks that it hashes to its name.
func (k *kilnd) blobs() map[string]int64 {
	k.TB.Helper()
	dir := filepath.Join(k.Root, "content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		k.TB.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			k.TB.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			k.TB.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.Name() {
			k.TB.Errorf("blob %s hashes to %s", e.Name(), got)
		}
		out[e.Name()] = n
	}
	return out
}

// ingests lists the ingests left in the content store.
func (k *kilnd) ingests() []string {
	ents, _ := os.ReadDir(filepath.Join(k.Root, "content", "ingest"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

func TestRegisterGuestImage(t *testing.T) {
	k := newKilnd(t)
	ctx := ctxT(t)
	im := registerGuest(t, k, "kiln-guest")

	check := func(im api.Image, how string) {
		t.Helper()
		if im.State != "available" || im.RootDeviceName != "/dev/vda" || im.Kernel == "" || im.Initrd == "" ||
			im.Cmdline != kilntest.GuestCmdline || len(im.BlockDeviceMappings) != 1 {
			t.Fatalf("%s: %+v", how, im)
		}
		m := im.BlockDeviceMappings[0]
		if m.DeviceName != "/dev/vda" || m.EBS == nil || !strings.HasPrefix(m.EBS.SnapshotID, "snap-") || m.EBS.VolumeSize != 1 {
			t.Errorf("%s: block device mapping %+v %+v", how, m, m.EBS)
		}
	}
	check(im, "register")
	byID, err := k.Image(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	check(byID, "inspect by id")
	byName, err := k.Image(ctx, "kiln-guest")
	if err != nil || byName.ID != im.ID {
		t.Fatalf("inspect by name: %+v, %v", byName, err)
	}
	list, err := k.Images(ctx, client.ListImagesOptions{Filters: []string{"name=kiln-*"}})
	if err != nil || len(list) != 1 || list[0].ID != im.ID {
		t.Fatalf("ls --filter name=kiln-*: %+v, %v", list, err)
	}
	check(list[0], "ls")
	if list, _ := k.Images(ctx, client.ListImagesOptions{Filters: []string{"name=other"}}); len(list) != 0 {
		t.Errorf("ls --filter name=other: %+v", list)
	}
	blobs := k.blobs() // checks every blob hashes to its name
	if len(blobs) != 5 {
		t.Errorf("%d blobs, want 5 (layer, kernel, initrd, config, manifest)", len(blobs))
	}

	// Tags.
	if im, err = k.TagImage(ctx, im.ID, map[string]string{"env": "test", "team": "kiln"}); err != nil || im.Tags["env"] != "test" {
		t.Fatalf("tag: %+v, %v", im.Tags, err)
	}
	if im, err = k.UntagImage(ctx, "kiln-guest", []string{"team"}); err != nil || len(im.Tags) != 1 {
		t.Fatalf("untag: %+v, %v", im.Tags, err)
	}
	if list, _ := k.Images(ctx, client.ListImagesOptions{Filters: []string{"tag:env=test"}}); len(list) != 1 {
		t.Errorf("ls --filter tag:env=test: %d images", len(list))
	}

	// A restart keeps everything.
	k.Restart()
	again, err := k.Image(ctx, im.ID)
	if err != nil || again.State != "available" || again.Tags["env"] != "test" || again.ManifestDigest != im.ManifestDigest {
		t.Fatalf("after restart: %+v, %v", again, err)
	}

	// The same disk again adds no layer bytes: only a config and a manifest.
	before := total(k.blobs())
	second := registerGuest(t, k, "kiln-guest-2")
	grown := total(k.blobs()) - before
	if grown <= 0 || grown > 16<<10 {
		t.Errorf("registering the same disk again grew the store by %d bytes", grown)
	}
	if second.BlockDeviceMappings[0].EBS.SnapshotID == im.BlockDeviceMappings[0].EBS.SnapshotID {
		t.Error("the second image shares the first's snapshot record")
	}

	// Deregister + gc removes what only the first used and keeps what the second shares.
	if _, err := k.DeregisterImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Image(ctx, im.ID); !isCode(err, api.CodeInvalidAMIIDNotFound) {
		t.Errorf("inspect after deregister: %v", err)
	}
	res, err := k.GC(ctx)
	if err != nil || res.BlobsRemoved != 2 {
		t.Errorf("gc after deregistering the first: %+v, %v (want its config and manifest removed)", res, err)
	}
	if _, err := k.Image(ctx, second.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(k.blobs()); n != 5 {
		t.Errorf("%d blobs left for the second image, want 5", n)
	}
	if id, err := k.DeregisterImage(ctx, "kiln-guest-2"); err != nil || id != second.ID {
		t.Fatalf("deregister kiln-guest-2 by name: %q, %v; want its id %s", id, err, second.ID)
	}
	if res, err = k.GC(ctx); err != nil || len(k.blobs()) != 0 {
		t.Errorf("gc after deregistering both: %+v, %v, %d blobs left", res, err, len(k.blobs()))
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}
