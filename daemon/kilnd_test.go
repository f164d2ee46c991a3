package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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
	dir, err := os.MkdirTemp("", "kilnd-bin-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755)
	kilndBin, kilnBin = filepath.Join(dir, "kilnd"), filepath.Join(dir, "kiln")
	argv := []string{"build", "-o", dir}
	if raceBuild { // the daemon runs under the race detector as the tests do
		argv = append(argv, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	out, err := exec.CommandContext(ctx, "go", append(argv, "kiln/cmd/kilnd", "kiln/cmd/kiln")...).CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build kilnd and kiln: %v\n%s", err, out)
		os.Exit(1)
	}
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

// guestDeadline bounds every wait on a guest (and on an operation that waits for one):
// a guest that is not up by then fails its test with the evidence, never sits. The test
// guest is ready in well under a minute under TCG on a loaded 2-core host.
const guestDeadline = 2 * time.Minute

// guestCtx is a context for one wait on a guest.
func guestCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guestDeadline)
	t.Cleanup(cancel)
	return ctx
}

// lockedBuffer is kilnd's output: written by exec's copying goroutine, read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// evidence is what a failed wait on instance id shows: the tail of its console and of
// QEMU's log (both in the instance directory), and of kilnd's log without the lines of
// the requests (the test's own polling).
func (k *kilnd) evidence(id string) string {
	dir := filepath.Join(k.root, "instances", id)
	var lines []string
	for _, l := range strings.Split(k.log.String(), "\n") {
		if !strings.Contains(l, `msg="request done"`) {
			lines = append(lines, l)
		}
	}
	return fmt.Sprintf("console (%s):\n%s\nqemu.log:\n%s\nkilnd log:\n%s", id, kilntest.FileTail(filepath.Join(dir, "console.log"), 40),
		kilntest.FileTail(filepath.Join(dir, "qemu.log"), 20), kilntest.Tail(strings.Join(lines, "\n"), 30))
}

// kilnd is one kilnd process of a test, with its root and socket.
type kilnd struct {
	tb     testing.TB
	root   string
	socket string
	cmd    *exec.Cmd
	log    *lockedBuffer
	done   chan struct{}
	// wrap goes before kilnd's argv (systemd-socket-activate …); args after it; env is
	// added to its environment. logLevel is --log-level and accel --accel (testAccel
	// unless a test says otherwise; "" leaves each out).
	wrap, args, env []string
	// inherited are descriptors kilnd starts with past stdio (3, 4, …), as a careless
	// parent may leave them.
	inherited       []*os.File
	logLevel, accel string
	*client.Client
}

// shortDir returns a directory under /tmp short enough for a Unix socket path.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "kt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// publicDir is shortDir that every user may enter (the accounts tests run kiln as
// other users).
func publicDir(t testing.TB) string {
	t.Helper()
	d := shortDir(t)
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// kilndIn makes (but does not start) a kilnd with its root, socket and settings file
// in dir.
func kilndIn(t testing.TB, dir, logLevel string) *kilnd {
	k := &kilnd{tb: t, root: filepath.Join(dir, "root"), socket: filepath.Join(dir, "s"), logLevel: logLevel, accel: testAccel}
	k.Client = client.New(k.socket)
	return k
}

// newKilnd starts kilnd on a fresh root and waits until it serves.
func newKilnd(t *testing.T) *kilnd {
	k := kilndIn(t, shortDir(t), "debug")
	k.start()
	return k
}

func newClient(socket string) *client.Client { return client.New(socket) }

func (k *kilnd) start() {
	k.tb.Helper()
	k.log = &lockedBuffer{}
	argv := append(append([]string{}, k.wrap...), kilndBin, "--root", k.root, "--socket", k.socket,
		"--config", filepath.Join(filepath.Dir(k.root), "kilnd.json"))
	if k.logLevel != "" {
		argv = append(argv, "--log-level", k.logLevel)
	}
	if k.accel != "" {
		argv = append(argv, "--accel", k.accel)
	}
	argv = append(argv, k.args...)
	k.cmd = exec.Command(argv[0], argv[1:]...)
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	k.cmd.Env = append(os.Environ(), k.env...)
	k.cmd.ExtraFiles = k.inherited
	if err := k.cmd.Start(); err != nil {
		k.tb.Fatal(err)
	}
	k.done = make(chan struct{})
	go func() { k.cmd.Wait(); close(k.done) }()
	k.tb.Cleanup(k.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := k.Info(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-k.done:
			k.tb.Fatalf("kilnd exited: %v\n%s", k.cmd.ProcessState, k.log)
		default:
		}
		if time.Now().After(deadline) {
			k.tb.Fatalf("kilnd did not serve within 30s: %v\n%s", err, k.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops kilnd with SIGTERM and waits for it.
func (k *kilnd) stop() {
	k.tb.Helper()
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		k.tb.Fatalf("kilnd did not stop on SIGTERM\n%s", k.log)
	}
	k.checkRaces()
}

// kill stops kilnd with SIGKILL, as a crash would.
func (k *kilnd) kill() {
	k.cmd.Process.Kill()
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		k.tb.Errorf("kilnd %d did not die of SIGKILL", k.cmd.Process.Pid)
	}
	k.checkRaces()
}

// checkRaces fails the test when kilnd, built with -race, reported a data race.
func (k *kilnd) checkRaces() {
	if s := k.log.String(); strings.Contains(s, "WARNING: DATA RACE") {
		k.tb.Errorf("kilnd reported a data race:\n%s", s[strings.Index(s, "WARNING: DATA RACE"):])
	}
}

func (k *kilnd) restart() {
	k.tb.Helper()
	k.stop()
	k.start()
}

// ctxT is the context of a test's requests that do not wait on a guest (those have
// guestCtx): a bound on the whole test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// registerGuest registers the test guest under name and waits for it.
func registerGuest(t *testing.T, k *kilnd, name string) api.Image {
	t.Helper()
	g := kilntest.Guest(t)
	ctx := guestCtx(t)
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{
		Name:    name,
		Disks:   []api.Disk{{Name: filepath.Join(g, "root.qcow2"), Format: "qcow2"}},
		Kernel:  filepath.Join(g, "vmlinuz"),
		Initrd:  filepath.Join(g, "initrd.img"),
		Cmdline: "console=ttyS0 root=/dev/vda",
	})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatalf("register %s: %v\nkilnd log:\n%s", name, err, kilntest.Tail(k.log.String(), 40))
	}
	return im
}

// blobs maps each blob of the store to its size and checks that it hashes to its name.
func (k *kilnd) blobs() map[string]int64 {
	k.tb.Helper()
	dir := filepath.Join(k.root, "content", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		k.tb.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			k.tb.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			k.tb.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.Name() {
			k.tb.Errorf("blob %s hashes to %s", e.Name(), got)
		}
		out[e.Name()] = n
	}
	return out
}

// ingests lists the ingests left in the content store.
func (k *kilnd) ingests() []string {
	ents, _ := os.ReadDir(filepath.Join(k.root, "content", "ingest"))
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
			im.Cmdline != "console=ttyS0 root=/dev/vda" || len(im.BlockDeviceMappings) != 1 {
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
	k.restart()
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
	if err := k.DeregisterImage(ctx, im.ID); err != nil {
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
	if err := k.DeregisterImage(ctx, "kiln-guest-2"); err != nil {
		t.Fatal(err)
	}
	if res, err = k.GC(ctx); err != nil || len(k.blobs()) != 0 {
		t.Errorf("gc after deregistering both: %+v, %v, %d blobs left", res, err, len(k.blobs()))
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}
