package oci

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/images"
	"kiln/internal/kilntest"
)

// TestPullStalledBodyEnds: a registry that sends the start of a layer and then nothing
// ends the pull after Stall with the reason, and leaves no image and no ingest; the
// layer check is never reached.
func TestPullStalledBodyEnds(t *testing.T) {
	root := t.TempDir()
	s, err := images.Open(context.Background(), root, kilntest.MetaDB(t, root))
	if err != nil {
		t.Fatal(err)
	}
	layer := []byte(strings.Repeat("x", 1<<20))
	ld := digest.FromBytes(layer)
	cfg, _ := json.Marshal(images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceName: "/dev/vda", RootDeviceType: "ebs",
		BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &images.EBS{Layer: ld, VolumeSize: 1}}}})
	cd := digest.FromBytes(cfg)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: images.MediaTypeConfig, Digest: cd, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{MediaType: images.MediaTypeLayer, Digest: ld, Size: int64(len(layer))}}}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(mb).String())
			w.Write(mb)
		case strings.HasSuffix(r.URL.Path, cd.String()):
			w.Write(cfg)
		case strings.HasSuffix(r.URL.Path, ld.String()):
			w.Write(layer[:4096])
			w.(http.Flusher).Flush()
			select { // then nothing
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	checked := false
	p := &Puller{Store: s, Stall: 300 * time.Millisecond,
		Check: func(context.Context, string, string, []string) (int64, string, error) {
			checked = true
			return 1, "", nil
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = p.Pull(ctx, PullRequest{OwnerID: "u", Remote: Remote{
		Reference: strings.TrimPrefix(srv.URL, "https://") + "/stall/img:v1",
		CACerts:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
	}})
	if err == nil || !strings.Contains(err.Error(), "sent nothing for 300ms") || !errdefs.IsUnavailable(err) {
		t.Fatalf("pull of a stalled body: %v; want Unavailable saying it sent nothing", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the pull ended after %s", d)
	}
	if checked {
		t.Error("a layer that never arrived was checked")
	}
	if list := s.Images(func(*images.Image) bool { return true }); len(list) != 0 {
		t.Errorf("images: %v", list)
	}
	if in, err := s.Ingests(context.Background()); err != nil || len(in) != 0 {
		t.Errorf("ingests: %v %v", in, err)
	}
}

func TestDefaultName(t *testing.T) {
	for _, tc := range []struct{ repo, tag, want string }{
		{"kiln/guest", "v1", "guest-v1"},
		{"web", "latest", "web-latest"},
		{"a/b", "sha256:" + strings.Repeat("0f", 32), "b-0f0f0f0f0f0f"},
		{"x/y", "1:2+3", "y-1-2-3"},
	} {
		if got := DefaultName(tc.repo, tc.tag); got != tc.want {
			t.Errorf("DefaultName(%q, %q) = %q; want %q", tc.repo, tc.tag, got, tc.want)
		}
		if err := images.CheckName(DefaultName(tc.repo, tc.tag)); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// TestCharge: a pulled snapshot counts its top layer and the layers under it the pull
// brought, each layer once in a pull.
func TestCharge(t *testing.T) {
	a, b, c := digest.FromString("a"), digest.FromString("b"), digest.FromString("c")
	layers := []ocispec.Descriptor{{Digest: a, Size: 100}, {Digest: b, Size: 10}, {Digest: c, Size: 1}}
	charged := map[digest.Digest]bool{}
	fresh := map[digest.Digest]bool{a: true, b: true}
	if n := charge(layers, []digest.Digest{a, b}, fresh, charged); n != 110 {
		t.Errorf("a chain of two new layers counts %d; want 110", n)
	}
	if n := charge(layers, []digest.Digest{a, b, c}, fresh, charged); n != 1 {
		t.Errorf("a second device over the same layers counts %d; want only its own top (1)", n)
	}
	if n := charge(layers, []digest.Digest{a, b}, map[digest.Digest]bool{}, map[digest.Digest]bool{}); n != 10 {
		t.Errorf("a chain whose layers were stored counts %d; want its top (10)", n)
	}
}
