package oci

import (
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"kiln/images"
)

// FuzzParseManifest feeds what a registry may send as a manifest and a config through
// the pull's parsers: never a panic, and what they accept holds to the limits (a kiln
// config type, at most MaxLayers distinct layers of kiln's media types within their
// sizes; devices on qcow2 layers of the manifest).
func FuzzParseManifest(f *testing.F) {
	layer := ocispec.Descriptor{MediaType: images.MediaTypeLayer, Digest: digest.FromString("l"), Size: 1 << 20}
	cfg, _ := json.Marshal(images.Config{Architecture: "x86_64", BootMode: "legacy-bios", RootDeviceName: "/dev/vda", RootDeviceType: "ebs",
		BlockDeviceMappings: []images.BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &images.EBS{Layer: layer.Digest, VolumeSize: 1}}}})
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: images.MediaTypeConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	f.Add(mb, cfg)
	f.Add([]byte(`{"schemaVersion":2,"layers":[]}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		m, err := parseManifest(manifest, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest})
		if err != nil {
			return
		}
		if m.Config.MediaType != images.MediaTypeConfig || len(m.Layers) == 0 || len(m.Layers) > MaxLayers {
			t.Fatalf("accepted a manifest of config %q with %d layers", m.Config.MediaType, len(m.Layers))
		}
		media := map[digest.Digest]string{}
		for _, l := range m.Layers {
			if l.Size <= 0 || l.Size > MaxLayerSize || media[l.Digest] != "" {
				t.Fatalf("accepted layer %+v", l)
			}
			media[l.Digest] = l.MediaType
		}
		c, err := parseConfig(config, m.Layers)
		if err != nil {
			return
		}
		for _, bdm := range c.BlockDeviceMappings {
			if bdm.EBS == nil || media[bdm.EBS.Layer] != images.MediaTypeLayer {
				t.Fatalf("accepted device %+v", bdm)
			}
		}
	})
}
