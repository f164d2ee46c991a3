package daemon

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
	"kiln/daemon/machines"
	"kiln/images"
)

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		code string // "" for success
	}{
		{`{"name": "web", "disks": [{"file": 0, "name": "/d.qcow2", "format": "qcow2"}]}`, ""},
		{`{"name": "web", "disks": [{"path": "/etc/shadow", "format": "raw"}]}`, api.CodeUnknownParameter},
		{`{"name": "web"}` + "\n", ""},
		{`{"name": "web"} {"name": "web"}`, api.CodeInvalidRequest},
		{`{"name": "web", "extra": 1}`, api.CodeUnknownParameter},
		{`{"disks": [{"path": "/d", "size": 1}]}`, api.CodeUnknownParameter},
		{`{"name": 1}`, api.CodeInvalidParameterValue},
		{`{"name": "web"`, api.CodeInvalidRequest},
		{``, api.CodeInvalidRequest},
		{`[]`, api.CodeInvalidParameterValue},
		{`{"name": "` + strings.Repeat("x", api.MaxBodySize) + `"}`, api.CodeRequestTooLarge},
	} {
		var req api.RegisterImageRequest
		err := api.Decode(strings.NewReader(tc.body), &req)
		var ae *api.Error
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("decode %.40q: %v", tc.body, err)
		case tc.code != "" && (!errors.As(err, &ae) || ae.Code != tc.code):
			t.Errorf("decode %.40q: got %v, want %s", tc.body, err, tc.code)
		}
	}
}

// requestTypes are the bodies the API decodes, for FuzzDecodeBody: kind picks one.
var requestTypes = []func() any{
	func() any { return &api.RegisterImageRequest{} },
	func() any { return &api.RunInstancesRequest{} },
	func() any { return &api.CreateImageRequest{} },
	func() any { return &api.CopyImageRequest{} },
	func() any { return &api.ShareRequest{} },
	func() any { return &api.TagRequest{} },
	func() any { return &api.UntagRequest{} },
	func() any { return &api.CreateVolumeRequest{} },
	func() any { return &api.AttachVolumeRequest{} },
	func() any { return &api.StopRequest{} },
	func() any { return &api.PushImageRequest{} },
	func() any { return &api.PullImageRequest{} },
	func() any { return &api.ExportImageRequest{} },
	func() any { return &api.ImportImageRequest{} },
}

// FuzzDecodeBody: any body decodes into any request type or fails with an API error;
// nothing panics; a body that decodes re-encodes to one that decodes the same; the
// checks that follow decoding (instance sizes, tags, names) refuse with an
// InvalidArgument error or accept values in range.
func FuzzDecodeBody(f *testing.F) {
	for i, s := range []string{
		`{"name": "web", "disks": [{"file": 0, "name": "/d.qcow2", "format": "qcow2", "deviceName": "/dev/vda"}], "kernelFile": 1, "initrdFile": 2, "tags": {"a": "b"}}`,
		`{"image": "web", "cpus": 2, "memoryMiB": 512, "count": 3, "userData": "IyEvYmluL3NoCg==", "volumes": [{"deviceName": "/dev/vdb", "sizeGiB": 1}]}`,
		`{"name": "snap", "noReboot": true, "tags": {"k": "v"}}`,
		`{"name": "copy", "copyTags": true}`,
		`{"users": ["bob"], "groups": ["devs"], "public": true}`,
		`{"tags": {"a": "b"}}`, `{"keys": ["a"]}`, `{"size": 8, "snapshotId": "snap-0123456789abcdef0"}`,
		`{"instance": "i-0123456789abcdef0", "deviceName": "/dev/vdc"}`, `{"force": true}`,
		`{"reference": "localhost:5000/a/b:v1", "containerDisk": true, "auth": {"username": "u", "password": "p"}, "caCerts": "-----BEGIN CERTIFICATE-----", "plainHttp": true}`,
		`{"reference": "localhost:5000/a/b@sha256:00", "name": "web", "tags": {"a": "b"}, "auth": {"identityToken": "t"}}`,
		`{"name": 1}`, `{`, `{} {}`, `null`, `{"image": "x", "instanceType": "nano", "cpus": 1}`, `{"image": "x", "cpus": -1}`,
	} {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		newReq := requestTypes[int(kind)%len(requestTypes)]
		req := newReq()
		err := api.Decode(bytes.NewReader(body), req)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code == "" || ae.Message == "" {
				t.Fatalf("decode error is not an API error: %v", err)
			}
			return
		}
		var buf bytes.Buffer
		writeJSONTo(&buf, req)
		again := newReq()
		if err := api.Decode(&buf, again); err != nil {
			t.Fatalf("re-encoded body does not decode: %v", err)
		}
		switch r := req.(type) {
		case *api.RunInstancesRequest:
			_, cpus, mem, err := machines.Size(*r)
			if err == nil && (cpus < 1 || mem < 1) {
				t.Fatalf("size accepted %d vCPUs, %d MiB", cpus, mem)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("size: %v is not InvalidArgument", err)
			}
		case *api.TagRequest:
			if _, err := images.MergeTags(nil, r.Tags); err != nil && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("tags: %v is not InvalidArgument", err)
			}
		}
	})
}
