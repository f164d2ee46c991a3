package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// BenchmarkPushPull pushes an image of one 1 GiB layer of random data (and a small
// config) to a real registry (Distribution, TLS, htpasswd, on loopback) and pulls it into
// another kilnd, against skopeo copying the same blobs between an OCI layout and the
// registry: the figures for issue 15. Each push finds the registry without the blobs
// (so every blob is sent) and each pull goes into an empty store (the image is deregistered and
// collected between), so both sides move all the bytes. kiln's pull also verifies every
// byte and checks the layer with qemu-img (info, check); skopeo verifies digests only.
// push-delta/kiln pushes an image derived from it with a 32 MiB delta and reports the
// bytes sent.
func BenchmarkPushPull(b *testing.B) {
	reg := kilntest.StartRegistry(b)
	skopeo := kilntest.Need(b, "skopeo")
	src := newKilndB(b, filepath.Join(shortDir(b), "root"))
	dst := newKilndB(b, filepath.Join(shortDir(b), "root"))
	ctx := context.Background()
	const size = 1 << 30
	disk := randomDisk(b, b.TempDir(), size)
	im, err := src.RegisterImage(ctx, api.RegisterImageRequest{Name: "bench", Disks: []api.Disk{{Name: disk, Format: "raw"}}})
	if err != nil {
		b.Fatal(err)
	}
	if im, err = src.WaitImage(ctx, im.ID, nil); err != nil || im.State != "available" {
		b.Fatalf("register: %v %+v", err, im)
	}
	registry := api.Registry{CACerts: string(reg.CAPEM), Auth: &api.RegistryAuth{Username: reg.User, Password: reg.Password}}
	creds := reg.User + ":" + reg.Password
	certDir := b.TempDir() // skopeo's --cert-dir: the CA as ca.crt
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), reg.CAPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	layout := ociLayout(b, src, im)
	n := 0
	next := func(who string) string { n++; return fmt.Sprintf("%s/bench/%s-%d:v1", reg.Host, who, n) }
	run := func(argv ...string) {
		if out, err := kilntest.CommandWithin(b, 10*time.Minute, argv...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}

	// Every push finds the registry without the blobs: skopeo would otherwise mount them
	// from the repository it pushed them to before (its blob info cache remembers it),
	// where kiln's push (a HEAD, then an upload) sends them again.
	forget := func(b *testing.B) {
		b.StopTimer()
		if err := os.RemoveAll(filepath.Join(reg.Dir, "data", "docker", "registry", "v2", "blobs")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	var kilnRef, skopeoRef string
	b.Run("push/kiln", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			forget(b)
			kilnRef = next("kiln")
			res, err := src.PushImage(ctx, im.ID, api.PushImageRequest{Reference: kilnRef, Registry: registry}, nil)
			if err != nil || res.BlobsPushed != res.Blobs {
				b.Fatalf("push: %v %+v", err, res)
			}
		}
	})
	b.Run("push/skopeo", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			forget(b)
			skopeoRef = next("skopeo")
			run(skopeo, "copy", "-q", "--dest-creds", creds, "--dest-cert-dir", certDir, "oci:"+layout+":v1", "docker://"+skopeoRef)
		}
	})
	kilnRef = next("kiln") // its blobs again, for the pulls
	if _, err := src.PushImage(ctx, im.ID, api.PushImageRequest{Reference: kilnRef, Registry: registry}, nil); err != nil {
		b.Fatal(err)
	}
	b.Run("pull/kiln", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			got, err := dst.PullImage(ctx, api.PullImageRequest{Reference: kilnRef, Name: "pulled", Registry: registry}, nil)
			if err != nil {
				b.Fatalf("pull: %v", err)
			}
			b.StopTimer()
			if _, err := dst.DeregisterImage(ctx, got.ID); err != nil {
				b.Fatal(err)
			}
			if _, err := dst.GC(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	// A derived image (an instance of it with 32 MiB written, captured) pushed to the
	// repository that has the base: only the delta and a config travel (target: at most
	// the delta and 1 MiB). Only the first push of each iteration's new tag sends it:
	// the figure is the bytes, and the first push's time.
	b.Run("push-delta/kiln", func(b *testing.B) {
		const delta = 32 << 20
		b.StopTimer()
		b.Cleanup(src.KillQEMUs)
		inst, _ := stoppedWithDelta(b, src, im, delta)
		child, err := src.CreateImage(ctx, inst.ID, api.CreateImageRequest{Name: "bench-child"})
		if err == nil {
			child, err = src.WaitImage(ctx, child.ID, nil)
		}
		if err != nil || child.State != "available" {
			b.Fatalf("create the derived image: %v %+v", err, child)
		}
		repo := strings.TrimSuffix(kilnRef, ":v1")
		var sent int64
		var first time.Duration
		b.StartTimer()
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			res, err := src.PushImage(ctx, child.ID, api.PushImageRequest{Reference: fmt.Sprintf("%s:child-%d", repo, i), Registry: registry}, nil)
			if err != nil {
				b.Fatalf("push the derived image: %v", err)
			}
			if i == 0 {
				sent, first = res.BytesPushed, time.Since(start)
			}
		}
		b.ReportMetric(float64(sent)/(1<<20), "MiB-sent")
		b.ReportMetric(float64(sent-delta)/(1<<20), "MiB-over-delta")
		b.ReportMetric(first.Seconds(), "s-first-push")
	})
	b.Run("pull/skopeo", func(b *testing.B) {
		b.SetBytes(size)
		out := filepath.Join(b.TempDir(), "layout")
		for b.Loop() {
			run(skopeo, "copy", "-q", "--src-creds", creds, "--src-cert-dir", certDir, "docker://"+skopeoRef, "oci:"+out+":v1")
			b.StopTimer()
			os.RemoveAll(out) // an empty layout each time, as kilnd's store is
			b.StartTimer()
		}
	})
}

// ociLayout writes an image of k as an OCI layout (the blobs hard-linked from k's
// store), for skopeo to copy.
func ociLayout(b *testing.B, k *kilnd, im api.Image) string {
	dir := filepath.Join(b.TempDir(), "layout")
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		b.Fatal(err)
	}
	link := func(d digest.Digest) []byte {
		from := filepath.Join(k.Root, "content", "blobs", "sha256", d.Encoded())
		if err := os.Link(from, filepath.Join(blobs, d.Encoded())); err != nil {
			b.Fatal(err)
		}
		data, _ := os.ReadFile(from)
		return data
	}
	md := digest.Digest(im.ManifestDigest)
	mb := link(md)
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		b.Fatal(err)
	}
	link(m.Config.Digest)
	for _, l := range m.Layers {
		link(l.Digest)
	}
	index := ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: md, Size: int64(len(mb)),
		Annotations: map[string]string{ocispec.AnnotationRefName: "v1"}}}}
	index.SchemaVersion = 2
	ib, _ := json.Marshal(index)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}
