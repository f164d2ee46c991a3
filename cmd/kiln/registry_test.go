package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/internal/kilntest"
)

// TestPushPull: an image goes through a real registry (Distribution's, with TLS by a CA
// of the test's and htpasswd) from one kilnd to another and boots there. kiln registry
// login keeps the credential in docker's config after checking it (a wrong password is
// refused), push sends every blob the first time and none the second; a pull trusts the
// registry's CA only when told (--ca-file); the pulled image is available, says where
// it came from, and boots; an image made on it sends only its new layer back, and the
// first kilnd fetches only that layer; the credential is nowhere in kilnd's log, audit
// trail or root; without a credential the registry's refusal is said with the fix; a
// name in use is refused before anything is fetched.
func TestPushPull(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	reg := kilntest.StartRegistry(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	ka, kb := startKilnd(t), startKilnd(t)
	a, b := ka.Socket, kb.Socket
	registerGuest(t, a, "kiln-guest", kilntest.GuestCmdline)
	ref := reg.Host + "/kiln/guest:v1"

	code, _, errOut := kiln(t, a, "image", "push", "kiln-guest", ref, "--ca-file", reg.CAFile)
	if code != 1 || !strings.Contains(errOut, "kiln registry login "+reg.Host) {
		t.Errorf("push without a login: exit %d, %q; want 1 and the login to do", code, errOut)
	}
	code, _, errOut = kiln(t, a, "registry", "login", reg.Host, "-u", reg.User, "--password", reg.Password)
	if code != 1 || !strings.Contains(errOut, "--ca-file") {
		t.Errorf("login without the CA: exit %d, %q; want 1 and --ca-file said", code, errOut)
	}
	code, _, errOut = kiln(t, a, "registry", "login", reg.Host, "-u", reg.User, "--password", "wrong", "--ca-file", reg.CAFile)
	if code != 1 || !strings.Contains(errOut, "refused") {
		t.Errorf("login with a wrong password: exit %d, %q", code, errOut)
	}
	code, out, errOut := kiln(t, a, "registry", "login", reg.Host, "-u", reg.User, "--password", reg.Password, "--ca-file", reg.CAFile)
	if code != 0 || !strings.Contains(out, "logged in to "+reg.Host) {
		t.Fatalf("login: exit %d, %q, %q", code, out, errOut)
	}
	if cfg, err := os.ReadFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json")); err != nil || !strings.Contains(string(cfg), reg.Host) {
		t.Errorf("docker's config after login: %v\n%s", err, cfg)
	}

	push := func(image, ref string) api.PushImageResult {
		t.Helper()
		code, out, errOut := kiln(t, a, "image", "push", image, ref, "--ca-file", reg.CAFile, "-o", "json")
		var res api.PushImageResult
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("push %s %s: exit %d, %q, %q\n%s", image, ref, code, out, errOut, kilntest.Tail(ka.Log.String(), 20))
		}
		return res
	}
	first := push("kiln-guest", ref)
	// The layer, kernel, initrd and config.
	if first.Blobs != 4 || first.BlobsPushed != 4 || first.BlobsSkipped != 0 || first.BytesPushed == 0 || !strings.HasPrefix(first.Digest, "sha256:") {
		t.Errorf("first push: %+v; want all 4 blobs sent", first)
	}
	again := push("kiln-guest", ref)
	if again.BlobsPushed != 0 || again.BlobsSkipped != 4 || again.Digest != first.Digest {
		t.Errorf("second push: %+v; want nothing sent, the same digest %s", again, first.Digest)
	}

	// Pushed to another repository of the registry, its blobs are mounted from the one it
	// was pushed to: nothing is sent.
	if other := push("kiln-guest", reg.Host+"/kiln/other:v1"); other.BlobsMounted != 4 || other.BlobsPushed != 0 || other.Digest != first.Digest {
		t.Errorf("push to another repository: %+v; want all 4 blobs mounted from kiln/guest, none sent", other)
	}

	checkContainerDisk(t, a, reg)

	// An independent client reads what kiln pushed: skopeo sees kiln's manifest (its
	// artifactType, the digest kiln said) and copies it, digests kept, to a second
	// repository, which kiln pulls below and launches.
	certDir := skopeoCertDir(t, reg)
	raw, err := kilntest.Command(t, kilntest.Need(t, "skopeo"), "inspect", "--raw", "--creds", reg.User+":"+reg.Password, "--cert-dir", certDir, "docker://"+ref).Output()
	var pushed ocispec.Manifest
	if err != nil || json.Unmarshal(raw, &pushed) != nil || pushed.ArtifactType != "application/vnd.kiln.image.v1+json" || digest.FromBytes(raw).String() != first.Digest {
		t.Errorf("skopeo inspect --raw of what kiln pushed: %v; want kiln's artifactType and digest %s\n%s", err, first.Digest, raw)
	}
	copied := reg.Host + "/kiln/copied:v1"
	if o, err := kilntest.Command(t, kilntest.Need(t, "skopeo"), "copy", "-q", "--preserve-digests",
		"--src-creds", reg.User+":"+reg.Password, "--src-cert-dir", certDir, "--dest-creds", reg.User+":"+reg.Password, "--dest-cert-dir", certDir,
		"docker://"+ref, "docker://"+copied).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy of what kiln pushed: %v\n%s", err, o)
	}

	// kilnd trusts the test's CA only when the request carries it.
	code, _, errOut = kiln(t, b, "image", "pull", ref)
	if code != 1 || !strings.Contains(errOut, "--ca-file") {
		t.Errorf("pull without the CA: exit %d, %q; want 1 and --ca-file said", code, errOut)
	}
	code, out, errOut = kiln(t, b, "image", "pull", ref, "--ca-file", reg.CAFile)
	if code != 0 || !strings.Contains(out, "available, pulled from "+ref+"@"+first.Digest) {
		t.Fatalf("pull: exit %d, %q, %q\n%s", code, out, errOut, kilntest.Tail(kb.Log.String(), 20))
	}
	cb := client.New(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	im, err := cb.Image(ctx, "guest-v1")
	if err != nil || im.State != "available" || im.SourceRef != ref || im.SourceDigest != first.Digest || len(im.BlockDeviceMappings) != 1 || im.Kernel == "" {
		t.Fatalf("pulled image: %+v, %v", im, err)
	}
	code, _, errOut = kiln(t, b, "image", "pull", ref, "--ca-file", reg.CAFile)
	if code != 1 || !strings.Contains(errOut, api.CodeInvalidAMINameDuplicate) {
		t.Errorf("pull to a name in use: exit %d, %q", code, errOut)
	}
	// The copy skopeo made is the same image: its layers are there, its config only travels.
	code, out, errOut = kiln(t, b, "image", "pull", copied, "--name", "copied", "--ca-file", reg.CAFile)
	if code != 0 || !strings.Contains(out, "available, pulled from "+copied+"@"+first.Digest) {
		t.Fatalf("pull of skopeo's copy: exit %d, %q, %q\n%s", code, out, errOut, kilntest.Tail(kb.Log.String(), 20))
	}
	if n := pulledBytes(t, kb, 2); n != 0 {
		t.Errorf("pull of a copy whose layers kilnd has fetched %d layer bytes; want none", n)
	}

	// It boots, and an image made of it sends back its new layer only.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := cb.Instances(ctx, false)
		for _, inst := range list {
			cb.InstanceAction(ctx, inst.ID, "terminate", true)
		}
	})
	code, out, errOut = kiln(t, b, "run", "copied", "--name", "pulled", "--type", "nano", "--wait", "--timeout", "4m", "-q")
	if code != 0 {
		t.Fatalf("run the pulled image: exit %d, %q, %q\n%s", code, out, errOut, kilntest.InstancesEvidence(filepath.Join(filepath.Dir(b), "root")))
	}
	if code, _, errOut = kiln(t, b, "image", "create", "pulled", "child", "--no-reboot", "--wait", "--timeout", "2m"); code != 0 {
		t.Fatalf("image create: exit %d, %q", code, errOut)
	}
	if code, _, errOut = kiln(t, b, "registry", "login", reg.Host, "-u", reg.User, "--password", reg.Password, "--ca-file", reg.CAFile); code != 0 {
		t.Fatalf("login: %q", errOut)
	}
	// A pulled image pushed to another repository of the same registry: its layers are
	// mounted from the repository it came from, only its (local) config is sent.
	code, out, errOut = kiln(t, b, "image", "push", "guest-v1", reg.Host+"/kiln/mounted:v1", "--ca-file", reg.CAFile, "-o", "json")
	var mounted api.PushImageResult
	if code != 0 || json.Unmarshal([]byte(out), &mounted) != nil || mounted.BlobsMounted != 3 || mounted.BlobsPushed != 1 {
		t.Errorf("push of a pulled image to another repository: exit %d, %q, %q; want its 3 layers mounted, the config sent", code, out, errOut)
	}
	before := treeSize(t, reg.Dir)
	code, out, errOut = kiln(t, b, "image", "push", "child", reg.Host+"/kiln/guest:child", "--ca-file", reg.CAFile, "-o", "json")
	var child api.PushImageResult
	if code != 0 || json.Unmarshal([]byte(out), &child) != nil {
		t.Fatalf("push child: exit %d, %q, %q", code, out, errOut)
	}
	// The registry grew by the new layer (and the config and manifest), not the base.
	if grew := treeSize(t, reg.Dir) - before; grew > child.BytesPushed+1<<20 || child.BytesPushed >= first.BytesPushed {
		t.Errorf("push of the child: the registry grew %d bytes, the push sent %d (the base's push sent %d); want about the delta", grew, child.BytesPushed, first.BytesPushed)
	}
	// Its new layer and config are sent; the base layer, kernel and initrd are there.
	if child.Blobs != 5 || child.BlobsPushed != 2 || child.BlobsSkipped != 3 {
		t.Errorf("push of an image made on a pushed one: %+v; want 2 of 5 blobs sent", child)
	}
	code, out, errOut = kiln(t, a, "image", "pull", reg.Host+"/kiln/guest:child", "--name", "child-back", "--ca-file", reg.CAFile)
	if code != 0 {
		t.Fatalf("pull child back: exit %d, %q, %q", code, out, errOut)
	}
	// The chain pulled (the new layer on the base the first kilnd had) boots there.
	if code, out, errOut = kiln(t, a, "run", "child-back", "--name", "back", "--type", "nano", "--wait", "--timeout", "4m", "-q"); code != 0 {
		t.Fatalf("run the pulled chain: exit %d, %q, %q\n%s", code, out, errOut, kilntest.InstancesEvidence(filepath.Join(filepath.Dir(a), "root")))
	}
	ca := client.New(a)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := ca.Instances(ctx, false)
		for _, inst := range list {
			ca.InstanceAction(ctx, inst.ID, "terminate", true)
		}
	})
	if code, out, _ = kiln(t, a, "image", "inspect", "child-back"); code != 0 || !strings.Contains(out, "Source digest") {
		t.Errorf("inspect of a pulled image: exit %d\n%s", code, out)
	}
	// The first kilnd had every layer but the new one: it fetched that one only.
	newLayer := child.BytesPushed - int64(len(`{}`)) // bounded below by the layer alone
	if n := pulledBytes(t, ka, 1); n == 0 || n >= child.BytesPushed || n < newLayer/2 {
		t.Errorf("pull into the first kilnd fetched %d bytes; want the new layer's only (the push sent %d with the config)", n, child.BytesPushed)
	}

	// The credential went to kilnd with each request and is nowhere in its log, its
	// audit trail or its store.
	for _, k := range []*kilntest.Kilnd{ka, kb} {
		if strings.Contains(k.Log.String(), reg.Password) {
			t.Errorf("kilnd's log holds the registry password")
		}
		if out, err := kilntest.Command(t, "grep", "-rlF", reg.Password, k.Root).Output(); err == nil || len(out) > 0 {
			t.Errorf("kilnd's root holds the registry password: %s", out)
		}
	}

	// Without a credential, the registry's refusal comes with the fix.
	if code, _, _ = kiln(t, b, "registry", "logout", reg.Host); code != 0 {
		t.Errorf("logout: exit %d", code)
	}
	code, _, errOut = kiln(t, b, "image", "pull", ref, "--name", "anon", "--ca-file", reg.CAFile)
	if code != 1 || !strings.Contains(errOut, "kiln registry login") {
		t.Errorf("pull after logout: exit %d, %q", code, errOut)
	}
}

// treeSize is the bytes of the regular files under dir (a registry's storage).
func treeSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// skopeoCertDir is a directory holding the registry's CA as skopeo's --cert-dir wants it.
func skopeoCertDir(t *testing.T, reg *kilntest.Registry) string {
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), reg.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certDir
}

// pulledBytes waits (a deadline) for kilnd's n-th "pulled" log line (its log reaches
// the test a little after the answer) and returns the layer bytes the last one fetched.
func pulledBytes(t *testing.T, k *kilntest.Kilnd, n int) int64 {
	t.Helper()
	re := regexp.MustCompile(`msg=pulled .*bytes=(\d+)`)
	var pulled [][]string
	kilntest.Poll(t, 10*time.Second, fmt.Sprintf("kilnd's log line %d of a pull", n), func() bool {
		pulled = re.FindAllStringSubmatch(k.Log.String(), -1)
		return len(pulled) >= n
	}, func() string { return kilntest.Tail(k.Log.String(), 20) })
	return atoi(pulled[len(pulled)-1][1])
}

func atoi(s string) int64 {
	var n int64
	for _, c := range s {
		n = n*10 + int64(c-'0')
	}
	return n
}

// checkContainerDisk: push --containerdisk sends the root device as a KubeVirt
// containerDisk, which skopeo (another OCI tool) copies out: one tar layer holding
// disk/disk.qcow2, owned by 107 with mode 0440, a self-contained qcow2 with the guest
// disk's content.
func checkContainerDisk(t *testing.T, socket string, reg *kilntest.Registry) {
	t.Helper()
	ref := reg.Host + "/kiln/guest-disk:v1"
	code, out, errOut := kiln(t, socket, "image", "push", "kiln-guest", ref, "--containerdisk", "--ca-file", reg.CAFile, "-o", "json")
	var res api.PushImageResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Blobs != 2 || res.BlobsPushed != 2 {
		t.Fatalf("push --containerdisk: exit %d, %q, %q", code, out, errOut)
	}
	certDir := skopeoCertDir(t, reg)
	raw, err := kilntest.Command(t, kilntest.Need(t, "skopeo"), "inspect", "--raw", "--creds", reg.User+":"+reg.Password, "--cert-dir", certDir, "docker://"+ref).Output()
	var pushed ocispec.Manifest
	if err != nil || json.Unmarshal(raw, &pushed) != nil || len(pushed.Layers) != 1 || pushed.Layers[0].MediaType != ocispec.MediaTypeImageLayer ||
		pushed.Config.MediaType != ocispec.MediaTypeImageConfig || pushed.Layers[0].Digest.String() == "" {
		t.Fatalf("the containerDisk's manifest in the registry: %v\n%s", err, raw)
	}
	layout := filepath.Join(t.TempDir(), "layout")
	if o, err := kilntest.Command(t, kilntest.Need(t, "skopeo"), "copy", "-q", "--src-creds", reg.User+":"+reg.Password, "--src-cert-dir", certDir,
		"docker://"+ref, "oci:"+layout+":v1").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy of the containerDisk: %v\n%s", err, o)
	}
	var index ocispec.Index
	var m ocispec.Manifest
	blob := func(d digest.Digest) string { return filepath.Join(layout, "blobs", "sha256", d.Encoded()) }
	readJSON := func(path string, v any) {
		b, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	readJSON(filepath.Join(layout, "index.json"), &index)
	readJSON(blob(index.Manifests[0].Digest), &m)
	if len(m.Layers) != 1 {
		t.Fatalf("containerDisk manifest as skopeo copied it: %+v", m)
	}
	f, err := os.Open(blob(m.Layers[0].Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var layer io.Reader = f
	if strings.HasSuffix(m.Layers[0].MediaType, "+gzip") { // skopeo compresses what it writes to a layout
		if layer, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	}
	tr := tar.NewReader(layer)
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if h.Name != "disk/disk.qcow2" {
			continue
		}
		if h.Uid != 107 || h.Gid != 107 || h.Mode != 0o440 {
			t.Errorf("disk/disk.qcow2: uid %d gid %d mode %o; want 107 107 0440", h.Uid, h.Gid, h.Mode)
		}
		out, err := os.Create(disk)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(out, tr)
		out.Close()
	}
	g := kilntest.GuestFiles(t)
	if o, err := kilntest.Command(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", disk, g.Disk).CombinedOutput(); err != nil {
		t.Errorf("the containerDisk's disk/disk.qcow2 differs from the guest's disk: %v\n%s", err, o)
	}
	if o, _ := kilntest.Command(t, "qemu-img", "info", "--output=json", disk).Output(); strings.Contains(string(o), "backing") {
		t.Errorf("the containerDisk's disk names a backing file:\n%s", o)
	}
}
