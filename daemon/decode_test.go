package daemon

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"kiln/daemon/api"
)

func TestDecodeBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		code string // "" for success
	}{
		{`{"name": "web", "disks": [{"path": "/d.qcow2", "format": "qcow2"}]}`, ""},
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
		err := decodeBody(strings.NewReader(tc.body), &req)
		var ae *api.Error
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("decode %.40q: %v", tc.body, err)
		case tc.code != "" && (!errors.As(err, &ae) || ae.Code != tc.code):
			t.Errorf("decode %.40q: got %v, want %s", tc.body, err, tc.code)
		}
	}
}

// FuzzDecodeBody: any body decodes or fails with an API error; nothing panics, and a
// body that decodes re-encodes to one that decodes the same.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"name": "web", "disks": [{"path": "/d.qcow2", "format": "qcow2", "deviceName": "/dev/vda"}], "tags": {"a": "b"}}`,
		`{"name": "web", "kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0"}`,
		`{"tags": {"a": "b"}}`, `{"keys": ["a"]}`, `{"name": 1}`, `{`, `{} {}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.RegisterImageRequest
		err := decodeBody(bytes.NewReader(body), &req)
		if err != nil {
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code == "" || ae.Message == "" {
				t.Fatalf("decode error is not an API error: %v", err)
			}
			return
		}
		var buf bytes.Buffer
		writeJSONTo(&buf, req)
		var again api.RegisterImageRequest
		if err := decodeBody(&buf, &again); err != nil {
			t.Fatalf("re-encoded body does not decode: %v", err)
		}
	})
}
