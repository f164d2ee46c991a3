package daemon_test

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/images"
	"kiln/images/oci"
	"kiln/internal/kilntest"
)

// lyingRegistry serves the distribution API's reads (enough for a pull) from what a test
// puts in it, per repository: a manifest (with the digest header it chooses) and blobs
// (the bytes it chooses, whatever their digest). It counts the blob requests.
type lyingRegistry struct {
	*httptest.Server
	mu    sync.Mutex
	repos map[string]*lyingRepo
	gets  map[string]int // blob GETs per repository
}

type lyingRepo struct {
	manifest       []byte
	manifestDigest digest.Digest // the Docker-Content-Digest it sends
	blobs          map[digest.Digest][]byte
	contentLength  map[digest.Digest]int64 // a Content-Length to claim
}

func newLyingRegistry(t *testing.T) *lyingRegistry {
	r := &lyingRegistry{repos: map[string]*lyingRepo{}, gets: map[string]int{}}
	r.Server = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *lyingRegistry) serve(w http.ResponseWriter, q *http.Request) {
	p := strings.TrimPrefix(q.URL.Path, "/v2/")
	if p == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, kind := range []string{"/manifests/", "/blobs/"} {
		i := strings.LastIndex(p, kind)
		if i < 0 {
			continue
		}
		repo, ok := r.repos[p[:i]]
		if !ok {
			http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		ref := p[i+len(kind):]
		if kind == "/manifests/" {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", repo.manifestDigest.String())
			w.Header().Set("Content-Length", fmt.Sprint(len(repo.manifest)))
			if q.Method != http.MethodHead {
				w.Write(repo.manifest)
			}
			return
		}
		b, ok := repo.blobs[digest.Digest(ref)]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		if q.Method == http.MethodGet {
			r.gets[p[:i]]++
		}
		if n, ok := repo.contentLength[digest.Digest(ref)]; ok {
			w.Header().Set("Content-Length", fmt.Sprint(n))
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // chunked: no Content-Length unless one is claimed
		}
		w.Write(b)
		return
	}
	http.NotFound(w, q)
}

func (r *lyingRegistry) put(name string, repo *lyingRepo) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.repos["lie/"+name] = repo
	return strings.TrimPrefix(strings.TrimPrefix(r.URL, "https://"), "http://") + "/lie/" + name + ":v1"
}

func (r *lyingRegistry) blobGets(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets["lie/"+name]
}

// kilnImage is a kiln image made by hand: its layers (bottom first), their bytes, its
// config and its manifest, as kiln image push would send them.
type kilnImage struct {
	layers []ocispec.Descriptor
	blobs  map[digest.Digest][]byte
	config images.Config
}

func (k *kilnImage) add(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	k.layers = append(k.layers, ocispec.Descriptor{MediaType: images.MediaTypeLayer, Digest: d, Size: int64(len(b))})
	k.blobs[d] = b
	return d
}

// repo is the image as an honest registry serves it.
func (k *kilnImage) repo(t *testing.T) *lyingRepo {
	cb, err := json.Marshal(k.config)
	if err != nil {
		t.Fatal(err)
	}
	cd := digest.FromBytes(cb)
	blobs := map[digest.Digest][]byte{cd: cb}
	for d, b := range k.blobs {
		blobs[d] = b
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: images.ArtifactType,
		Config: ocispec.Descriptor{MediaType: images.MediaTypeConfig, Digest: cd, Size: int64(len(cb))}, Layers: k.layers}
	m.SchemaVersion = 2
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &lyingRepo{manifest: mb, manifestDigest: digest.FromBytes(mb), blobs: blobs, contentLength: map[digest.Digest]int64{}}
}

// qcow2 makes a small qcow2 file with qemu-img's create options and returns its bytes.
func qcow2(t *testing.T, args ...string) []byte {
	t.Helper()
	f := filepath.Join(t.TempDir(), "l.qcow2")
	argv := append(append([]string{"qemu-img", "create", "-q", "-f", "qcow2"}, args...), f, "16M")
	if out, err := kilntest.Command(t, argv...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onTop is a qcow2 layer naming backing as its backing file (unchecked: -u).
func onTop(t *testing.T, backing string) []byte {
	return qcow2(t, "-u", "-F", "qcow2", "-b", backing)
}

// TestPullRefusesLyingRegistry: whatever a registry sends, kilnd keeps only what the
// manifest's digests and sizes say and what a registered disk may be. Each lie (bytes
// that do not hash to their digest, more or fewer bytes than said, a manifest that is
// not the one its digest names, a layer naming a host file, a layer not below it or an
// external data file, a corrupt layer, too many layers, a manifest too large, layers
// larger than the free space, a config naming what the manifest lacks, a layer no device
// uses, an image that is not kiln's) fails the pull with what was wrong, and leaves no
// image, no snapshot, no ingest, and never the refused blob; limits are checked before
// a blob is fetched. The honest image, served last, is pulled with its chain, and gc
// then keeps only its blobs; a pull of it by digest fetches only the config; a plain
// HTTP registry is refused saying --plain-http and taken with it; a repository the
// registry lacks is NotFound.
func TestPullRefusesLyingRegistry(t *testing.T) {
	k := newKilnd(t)
	ctx := ctxT(t)
	reg := newLyingRegistry(t)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Certificate().Raw}))

	honest := func() *kilnImage {
		im := &kilnImage{blobs: map[digest.Digest][]byte{}}
		base := im.add(qcow2(t, "-o", "compat=1.1"))
		top := im.add(onTop(t, base.Encoded()))
		im.config = images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceName: "/dev/vda", RootDeviceType: "ebs",
			BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda",
				EBS: &images.EBS{SnapshotID: "snap-0123456789abcdef0", Layer: top, VolumeSize: 1, DeleteOnTermination: true}}}}
		return im
	}
	flip := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)-1] ^= 0xff; return c }
	corrupt := func(b []byte) []byte {
		c := bytes.Clone(b)
		binary.BigEndian.PutUint64(c[72:], binary.BigEndian.Uint64(c[72:])|2) // the corrupt bit
		return c
	}
	// replaceTop swaps the top layer for b (honestly served: its own digest).
	replaceTop := func(im *kilnImage, b []byte) digest.Digest {
		old := im.layers[len(im.layers)-1].Digest
		delete(im.blobs, old)
		im.layers = im.layers[:len(im.layers)-1]
		d := im.add(b)
		im.config.BlockDeviceMappings[0].EBS.Layer = d
		return d
	}

	cases := []struct {
		name    string
		make    func() (*lyingRepo, digest.Digest) // the repo, and the blob that must never be stored
		ref     func(ref string, r *lyingRepo) string
		code    string
		message string
		noFetch bool // refused before any blob is fetched
	}{
		{name: "bytes-not-their-digest", code: api.CodeRegistryDataInvalid, message: "whose digest is",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				top := im.layers[1].Digest
				r := im.repo(t)
				r.blobs[top] = flip(r.blobs[top])
				return r, top
			}},
		{name: "more-bytes-than-said", code: api.CodeRegistryDataInvalid, message: "sent more bytes",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				top := im.layers[1].Digest
				r := im.repo(t)
				r.blobs[top] = append(bytes.Clone(r.blobs[top]), make([]byte, 1<<20)...)
				return r, top
			}},
		{name: "fewer-bytes-than-said", code: api.CodeRegistryDataInvalid, message: "bytes, the manifest says",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				top := im.layers[1].Digest
				r := im.repo(t)
				r.blobs[top] = r.blobs[top][:len(r.blobs[top])/2]
				return r, top
			}},
		{name: "content-length-lies", code: api.CodeRegistryDataInvalid, message: "Content-Length",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				top := im.layers[1].Digest
				r := im.repo(t)
				r.blobs[top] = append(bytes.Clone(r.blobs[top]), make([]byte, 4096)...)
				r.contentLength[top] = int64(len(r.blobs[top]))
				return r, top
			}},
		{name: "manifest-not-its-digest", code: api.CodeRegistryDataInvalid, message: "manifest whose digest is", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				r := honest().repo(t)
				r.manifestDigest = digest.FromString("another manifest")
				return r, ""
			}},
		{name: "manifest-by-digest-swapped", code: api.CodeRegistryDataInvalid, message: "", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) { return honest().repo(t), "" },
			ref: func(ref string, r *lyingRepo) string {
				return strings.TrimSuffix(ref, ":v1") + "@" + digest.FromString("the manifest asked for").String()
			}},
		{name: "backing-host-file", code: api.CodeInvalidParameterValue, message: `names backing file "/etc/shadow"`,
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				d := replaceTop(im, onTop(t, "/etc/shadow"))
				return im.repo(t), d
			}},
		{name: "backing-not-below", code: api.CodeInvalidParameterValue, message: "not a layer below it",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				d := replaceTop(im, onTop(t, digest.FromString("elsewhere").Encoded()))
				return im.repo(t), d
			}},
		{name: "external-data-file", code: api.CodeInvalidParameterValue, message: "external file",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				d := replaceTop(im, qcow2(t, "-o", "data_file="+filepath.Join(t.TempDir(), "data")))
				return im.repo(t), d
			}},
		{name: "corrupt-layer", code: api.CodeInvalidParameterValue, message: "marked corrupt",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				d := replaceTop(im, corrupt(im.blobs[im.layers[1].Digest]))
				return im.repo(t), d
			}},
		{name: "disk-larger-than-a-volume", code: api.CodeInvalidParameterValue, message: "more than a volume may be",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				f := filepath.Join(t.TempDir(), "huge.qcow2")
				if out, err := kilntest.Command(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "qcow2", "-b", im.layers[0].Digest.Encoded(), f, "17T").CombinedOutput(); err != nil {
					t.Fatalf("qemu-img: %v\n%s", err, out)
				}
				b, _ := os.ReadFile(f)
				d := replaceTop(im, b)
				return im.repo(t), d
			}},
		{name: "too-many-layers", code: api.CodeInvalidParameterValue, message: "layers; kiln takes at most", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				for i := 0; len(im.layers) <= oci.MaxLayers; i++ {
					im.add([]byte(fmt.Sprint(i)))
				}
				return im.repo(t), ""
			}},
		{name: "manifest-too-large", code: api.CodeInvalidParameterValue, message: "more than", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				r := honest().repo(t)
				r.manifest = append(r.manifest, bytes.Repeat([]byte(" "), oci.MaxManifestSize)...)
				r.manifestDigest = digest.FromBytes(r.manifest)
				return r, ""
			}},
		{name: "larger-than-free-space", code: api.CodeResourceLimitExceeded, message: "free", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				im.layers[1].Size = oci.MaxLayerSize
				return im.repo(t), im.layers[1].Digest
			}},
		{name: "config-names-a-missing-layer", code: api.CodeInvalidParameterValue, message: "is not a qcow2 layer of the manifest", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				im.config.BlockDeviceMappings[0].EBS.Layer = digest.FromString("nowhere")
				return im.repo(t), ""
			}},
		{name: "layer-no-device-uses", code: api.CodeInvalidParameterValue, message: "in no device's chain",
			make: func() (*lyingRepo, digest.Digest) {
				im := honest()
				im.add(qcow2(t, "-o", "compat=1.1,cluster_size=4096"))
				return im.repo(t), ""
			}},
		{name: "not-a-kiln-image", code: api.CodeInvalidParameterValue, message: "not a kiln image", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				r := honest().repo(t)
				var m ocispec.Manifest
				json.Unmarshal(r.manifest, &m)
				m.Config.MediaType = ocispec.MediaTypeImageConfig
				r.manifest, _ = json.Marshal(m)
				r.manifestDigest = digest.FromBytes(r.manifest)
				return r, ""
			}},
		{name: "another-artifact-type", code: api.CodeInvalidParameterValue, message: "its artifactType is", noFetch: true,
			make: func() (*lyingRepo, digest.Digest) {
				r := honest().repo(t)
				var m ocispec.Manifest
				json.Unmarshal(r.manifest, &m)
				m.ArtifactType = "application/vnd.example.other+json"
				r.manifest, _ = json.Marshal(m)
				r.manifestDigest = digest.FromBytes(r.manifest)
				return r, ""
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, never := tc.make()
			ref := reg.put(tc.name, r)
			if tc.ref != nil {
				ref = tc.ref(ref, r)
			}
			// With progress: a refusal found while bytes move ends the stream with the same error.
			_, err := k.PullImage(ctx, api.PullImageRequest{Reference: ref, Registry: api.Registry{CACerts: ca}}, func(api.Progress) {})
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.message) {
				t.Fatalf("pull: %v; want %s saying %q", err, tc.code, tc.message)
			}
			if tc.noFetch && reg.blobGets(tc.name) > 1 { // the config at most
				t.Errorf("%d blobs fetched; the pull should have been refused before any layer", reg.blobGets(tc.name))
			}
			if list, _ := k.Images(ctx, client.ListImagesOptions{}); len(list) != 0 {
				t.Errorf("images after a refused pull: %+v", list)
			}
			if list, _ := k.Snapshots(ctx); len(list) != 0 {
				t.Errorf("snapshots after a refused pull: %+v", list)
			}
			if in := k.ingests(); len(in) != 0 {
				t.Errorf("ingests after a refused pull: %v", in)
			}
			if never != "" {
				if _, ok := k.blobs()[never.Encoded()]; ok {
					t.Errorf("the refused blob %s is in the store", never)
				}
			}
		})
	}

	im := honest()
	ref := reg.put("honest", im.repo(t))
	if _, err := k.GC(ctx); err != nil { // the layers the lying cases committed go: the pull fetches them
		t.Fatal(err)
	}
	var last api.Progress
	got, err := k.PullImage(ctx, api.PullImageRequest{Reference: ref, Registry: api.Registry{CACerts: ca}}, func(p api.Progress) { last = p })
	if err != nil {
		t.Fatalf("honest pull: %v\n%s", err, kilntest.Tail(k.Log.String(), 20))
	}
	if got.State != "available" || got.Name != "honest-v1" || got.SourceRef != ref || !strings.HasPrefix(got.SourceDigest, "sha256:") {
		t.Errorf("pulled: %+v", got)
	}
	if last.BytesTotal == 0 || last.BytesDone != last.BytesTotal {
		t.Errorf("the pull's last progress: %+v; want every byte to fetch fetched", last)
	}
	sn, err := k.Snapshot(ctx, got.BlockDeviceMappings[0].EBS.SnapshotID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(sn)
	if !strings.Contains(string(b), im.layers[1].Digest.String()) {
		t.Errorf("snapshot %s does not name the top layer %s", b, im.layers[1].Digest)
	}
	if _, err := k.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for name := range k.blobs() {
		d := digest.NewDigestFromEncoded(digest.SHA256, name)
		if _, ok := im.blobs[d]; !ok && !isJSONBlob(k, name) {
			t.Errorf("after gc the store holds %s, not a blob of the pulled image", name)
		}
	}
	// A pull by digest of the same manifest is the same content: nothing fetched again.
	before := reg.blobGets("honest")
	if _, err := k.PullImage(ctx, api.PullImageRequest{Reference: strings.TrimSuffix(got.SourceRef, ":v1") + "@" + got.SourceDigest,
		Name: "again", Registry: api.Registry{CACerts: ca}}, nil); err != nil {
		t.Fatalf("pull by digest: %v", err)
	}
	if n := reg.blobGets("honest") - before; n != 1 { // the config only
		t.Errorf("pull of stored content fetched %d blobs; want the config only", n)
	}
	// A registry of plain HTTP: refused saying --plain-http, taken when asked.
	plain := &lyingRegistry{repos: map[string]*lyingRepo{}, gets: map[string]int{}}
	plain.Server = httptest.NewServer(http.HandlerFunc(plain.serve))
	defer plain.Close()
	plainRef := plain.put("plain", honest().repo(t))
	if _, err := k.PullImage(ctx, api.PullImageRequest{Reference: plainRef}, nil); err == nil || !strings.Contains(err.Error(), "--plain-http") {
		t.Errorf("pull from a plain HTTP registry without plainHttp: %v; want --plain-http said", err)
	}
	if _, err := k.PullImage(ctx, api.PullImageRequest{Reference: plainRef, Registry: api.Registry{PlainHTTP: true}}, nil); err != nil {
		t.Errorf("pull with plainHttp: %v", err)
	}
	if !errdefs.IsNotFound(func() error {
		_, err := k.PullImage(ctx, api.PullImageRequest{Reference: strings.Replace(ref, "honest", "nothing", 1), Registry: api.Registry{CACerts: ca}}, nil)
		return err
	}()) {
		t.Errorf("pull of a repository the registry lacks: want NotFound")
	}
}

// isJSONBlob: the store's own config and manifest of the pulled image.
func isJSONBlob(k *kilnd, name string) bool {
	b, err := os.ReadFile(filepath.Join(k.Root, "content", "blobs", "sha256", name))
	return err == nil && len(b) > 0 && b[0] == '{'
}

// TestImportRefusesCorruptTar: an OCI image layout tar is one more untrusted source,
// read with a pull's checks: a layer byte flipped, a blob missing, a file that is not a
// tar and a layout of two images are refused, leaving no image and no ingest; the tar as
// made imports, keeping the manifest's digest, and exports back to the same blobs.
func TestImportRefusesCorruptTar(t *testing.T) {
	k := newKilnd(t)
	ctx := ctxT(t)
	im := &kilnImage{blobs: map[digest.Digest][]byte{}}
	base := im.add(qcow2(t, "-o", "compat=1.1"))
	top := im.add(onTop(t, base.Encoded()))
	im.config = images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceName: "/dev/vda", RootDeviceType: "ebs",
		BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda",
			EBS: &images.EBS{SnapshotID: "snap-0123456789abcdef0", Layer: top, VolumeSize: 1, DeleteOnTermination: true}}}}
	r := im.repo(t)
	dir := t.TempDir()
	write := func(name string, manifests int, blob func(d digest.Digest, b []byte) []byte) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		put := func(name string, b []byte) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: 0o644})
			tw.Write(b)
		}
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: r.manifestDigest, Size: int64(len(r.manifest))}
		index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
		index.SchemaVersion = 2
		for range manifests {
			index.Manifests = append(index.Manifests, desc)
		}
		ib, _ := json.Marshal(index)
		put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
		put("index.json", ib)
		put("blobs/sha256/"+r.manifestDigest.Encoded(), r.manifest)
		for d, b := range r.blobs {
			if b = blob(d, b); b != nil {
				put("blobs/sha256/"+d.Encoded(), b)
			}
		}
		tw.Close()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	same := func(_ digest.Digest, b []byte) []byte { return b }
	notTar := filepath.Join(dir, "not.tar")
	os.WriteFile(notTar, []byte("not a tar at all, just words\n"), 0o600)
	// A layout whose manifest names a "manifest" of 2^62 bytes: oras-go's NewFromFS read
	// such a blob whole while it indexed the layout, before any check, and kilnd died.
	bomb := func() string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		put := func(name string, b []byte) {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(b)), Mode: 0o644})
			tw.Write(b)
		}
		x := []byte("x")
		m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			Config: ocispec.Descriptor{MediaType: images.MediaTypeConfig, Digest: digest.FromBytes(x), Size: 1},
			Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(x), Size: 1 << 62}}})
		ib, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}}})
		put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
		put("index.json", ib)
		put("blobs/sha256/"+digest.FromBytes(m).Encoded(), m)
		put("blobs/sha256/"+digest.FromBytes(x).Encoded(), x)
		tw.Close()
		path := filepath.Join(dir, "bomb.tar")
		os.WriteFile(path, buf.Bytes(), 0o600)
		return path
	}
	for _, tc := range []struct {
		name, file, code, message string
	}{
		{"flipped", write("flipped.tar", 1, func(d digest.Digest, b []byte) []byte {
			if d == top {
				c := bytes.Clone(b)
				c[len(c)/2] ^= 0xff
				return c
			}
			return b
		}), api.CodeInvalidParameterValue, "whose digest is"},
		{"missing", write("missing.tar", 1, func(d digest.Digest, b []byte) []byte {
			if d == top {
				return nil
			}
			return b
		}), api.CodeInvalidParameterValue, "lacks a blob"},
		{"two-images", write("two.tar", 2, same), api.CodeInvalidParameterValue, "names 2 manifests"},
		{"not-a-tar", notTar, api.CodeInvalidParameterValue, "not a tar"},
		{"bomb", bomb(), api.CodeInvalidParameterValue, "not one of kiln's media types"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.ImportImage(ctx, tc.file, api.ImportImageRequest{Name: tc.name}, func(api.Progress) {})
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Message, tc.message) {
				t.Fatalf("import %s: %v; want %s saying %q", tc.name, err, tc.code, tc.message)
			}
			if list, _ := k.Images(ctx, client.ListImagesOptions{}); len(list) != 0 {
				t.Errorf("images after a refused import: %d", len(list))
			}
			if in := k.ingests(); len(in) != 0 {
				t.Errorf("ingests after a refused import: %v", in)
			}
		})
	}
	good := write("good.tar", 1, same)
	got, err := k.ImportImage(ctx, good, api.ImportImageRequest{Name: "good"}, nil)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, kilntest.Tail(k.Log.String(), 20))
	}
	if got.State != "available" || got.SourceDigest != r.manifestDigest.String() || got.SourceRef != "oci-archive:"+good {
		t.Errorf("imported: %+v; want source digest %s", got, r.manifestDigest)
	}
	back := filepath.Join(dir, "back.tar")
	res, err := k.ExportImage(ctx, got.ID, back)
	if err != nil || res.Bytes == 0 {
		t.Fatalf("export: %+v %v", res, err)
	}
	f, err := os.Open(back)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names[h.Name] = true
	}
	for _, d := range []digest.Digest{base, top} {
		if !names["blobs/sha256/"+d.Encoded()] {
			t.Errorf("the export of the imported image lacks layer %s: %v", d, names)
		}
	}
	if !names["oci-layout"] || !names["index.json"] {
		t.Errorf("the export is not an OCI image layout: %v", names)
	}

	// The store keeps the layers until gc, but once the caller can no longer use them a
	// manifest naming their digests gives her nothing: the source must bring the bytes.
	if _, err := k.DeregisterImage(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	missing := write("missing-again.tar", 1, func(d digest.Digest, b []byte) []byte {
		if d == top {
			return nil
		}
		return b
	})
	_, err = k.ImportImage(ctx, missing, api.ImportImageRequest{Name: "claimed"}, nil)
	if ae := (*api.Error)(nil); !errors.As(err, &ae) || ae.Code != api.CodeInvalidParameterValue || !strings.Contains(ae.Message, "lacks a blob") {
		t.Errorf("import naming a stored layer it lacks, by a caller who cannot use it: %v; want refused as lacking a blob", err)
	}
}
