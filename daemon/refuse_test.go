package daemon_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"

	"kiln/internal/kilntest"
)

// oPath is Linux's O_PATH, which package syscall does not name.
const oPath = 0x200000

// fifo makes a FIFO in dir and, unless flags is -1, opens it with flags (O_RDWR opens
// without a writer).
func fifo(t *testing.T, dir string, flags int) *os.File {
	t.Helper()
	p := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	if flags == -1 {
		return nil
	}
	return kilntest.Open(t, p, flags)
}

func TestRegisterRefusals(t *testing.T) {
	k := newKilnd(t)
	ctx := ctxT(t)
	d := kilntest.Disks(t)
	good := filepath.Join(d, "good.qcow2")
	taken, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "taken", Disks: []api.Disk{{Name: good, Format: "qcow2"}}})
	if err != nil {
		t.Fatal(err)
	}
	// What is stored is taken once nothing is pending, so that the refusals are the
	// only requests that could add to it.
	if _, err := k.WaitImage(ctx, taken.ID, nil); err != nil {
		t.Fatal(err)
	}
	blobsBefore := k.blobs()
	if b, err := os.ReadFile(filepath.Join(d, "flat.vmdk")); err != nil || !strings.Contains(string(b), filepath.Join(d, "host-secret.raw")) {
		t.Fatalf("flat.vmdk does not name host-secret.raw: %v\n%s", err, b)
	}

	for _, tc := range []struct {
		name string
		req  api.RegisterImageRequest
		code string
		says string
	}{
		{"backing file", api.RegisterImageRequest{Name: "x-backed", Disks: []api.Disk{{Name: filepath.Join(d, "backed.qcow2"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "/etc/passwd"},
		{"external data file", api.RegisterImageRequest{Name: "x-data", Disks: []api.Disk{{Name: filepath.Join(d, "datafile.qcow2"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "external file"},
		{"encrypted qcow2", api.RegisterImageRequest{Name: "x-luks", Disks: []api.Disk{{Name: filepath.Join(d, "luks.qcow2"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "qcow2 is encrypted (LUKS)"},
		{"raw as qcow2", api.RegisterImageRequest{Name: "x-raw", Disks: []api.Disk{{Name: filepath.Join(d, "random.raw"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "not a qcow2 file"},
		{"truncated qcow2", api.RegisterImageRequest{Name: "x-trunc", Disks: []api.Disk{{Name: filepath.Join(d, "truncated.qcow2"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "truncated"},
		{"VMDK extent in another file", api.RegisterImageRequest{Name: "x-vmdk", Disks: []api.Disk{{Name: filepath.Join(d, "flat.vmdk"), Format: "vmdk"}}},
			api.CodeInvalidParameterValue, "single-file"},
		{"qcow2 as raw", api.RegisterImageRequest{Name: "x-qcow2-raw", Disks: []api.Disk{{Name: good, Format: "raw"}}},
			api.CodeInvalidParameterValue, "given as raw but holds a qcow2 header"},
		{"VHDX as raw", api.RegisterImageRequest{Name: "x-vhdx-raw", Disks: []api.Disk{{Name: filepath.Join(d, "good.vhdx"), Format: "raw"}}},
			api.CodeInvalidParameterValue, "format=vhdx"},
		{"VMDK as qcow2", api.RegisterImageRequest{Name: "x-vmdk-qcow2", Disks: []api.Disk{{Name: filepath.Join(d, "good.vmdk"), Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "format=vmdk"},
		{"force-raw with qcow2", api.RegisterImageRequest{Name: "x-force", Disks: []api.Disk{{Name: good, Format: "qcow2", ForceRaw: true}}},
			api.CodeInvalidParameterValue, "force-raw is for a disk given as raw"},
		{"name with /", api.RegisterImageRequest{Name: "a/b", Disks: []api.Disk{{Name: good, Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "not allowed"},
		{"name of 129", api.RegisterImageRequest{Name: strings.Repeat("n", 129), Disks: []api.Disk{{Name: good, Format: "qcow2"}}},
			api.CodeInvalidParameterValue, "128"},
		{"duplicate name", api.RegisterImageRequest{Name: "taken", Disks: []api.Disk{{Name: good, Format: "qcow2"}}},
			api.CodeInvalidAMINameDuplicate, "already used"},
		{"no disk", api.RegisterImageRequest{Name: "x-none"}, api.CodeInvalidParameterValue, "--disk"},
		{"unknown format", api.RegisterImageRequest{Name: "x-iso", Disks: []api.Disk{{Name: good, Format: "iso"}}},
			api.CodeInvalidParameterValue, "must be one of"},
		{"kernel without initrd", api.RegisterImageRequest{Name: "x-kernel", Disks: []api.Disk{{Name: good, Format: "qcow2"}}, Kernel: good},
			api.CodeInvalidParameterValue, "initrd"},
		{"reserved tag", api.RegisterImageRequest{Name: "x-tag", Disks: []api.Disk{{Name: good, Format: "qcow2"}}, Tags: map[string]string{"kiln:x": "y"}},
			api.CodeInvalidParameterValue, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.RegisterImage(ctx, tc.req)
			if !isCode(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("got %v; want %s saying %q", err, tc.code, tc.says)
			}
		})
	}

	// A missing file is the client's to report: it opens the files, kilnd never does.
	_, err = k.RegisterImage(ctx, api.RegisterImageRequest{Name: "x-missing", Disks: []api.Disk{{Name: filepath.Join(d, "nope.qcow2"), Format: "qcow2"}}})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing disk: %v; want the client's not-exist error", err)
	}

	// Files travel as descriptors named by index; a path is not a field of the API.
	goodFile, err := os.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	defer goodFile.Close()
	fdsBefore := kilntest.Descriptors(t, k.Cmd.Process.Pid)
	for _, tc := range []struct {
		name  string
		body  string
		files []*os.File
		code  string
		says  string
	}{
		{"a path", `{"name": "x-path", "disks": [{"path": "/etc/shadow", "format": "raw"}]}`, nil, api.CodeUnknownParameter, `"path"`},
		{"no file passed", `{"name": "x-nofile", "disks": [{"file": 0, "format": "qcow2"}]}`, nil, api.CodeInvalidParameterValue, "was not passed"},
		{"index out of range", `{"name": "x-range", "disks": [{"file": 1, "format": "qcow2"}]}`, []*os.File{goodFile}, api.CodeInvalidParameterValue, "file 1 was not passed"},
		{"one file twice", `{"name": "x-twice", "disks": [{"file": 0, "format": "qcow2"}, {"file": 0, "format": "qcow2"}]}`, []*os.File{goodFile}, api.CodeInvalidParameterValue, "named twice"},
		{"file not named", `{"name": "x-extra", "disks": [{"file": 0, "format": "qcow2"}]}`, []*os.File{goodFile, goodFile}, api.CodeInvalidParameterValue, "not named"},
		{"a directory", `{"name": "x-dir", "disks": [{"file": 0, "format": "qcow2"}]}`, []*os.File{kilntest.Open(t, d, syscall.O_RDONLY)}, api.CodeInvalidParameterValue, "not a regular file"},
		{"an O_PATH descriptor", `{"name": "x-opath", "disks": [{"file": 0, "format": "qcow2"}]}`, []*os.File{kilntest.Open(t, good, oPath)}, api.CodeInvalidParameterValue, "not open for reading"},
		{"a write-only descriptor", `{"name": "x-wronly", "disks": [{"file": 0, "format": "qcow2"}]}`, []*os.File{kilntest.Open(t, good, syscall.O_WRONLY)}, api.CodeInvalidParameterValue, "not open for reading"},
		{"an O_PATH kernel", `{"name": "x-kopath", "disks": [{"file": 0, "format": "qcow2"}], "kernelFile": 1, "initrdFile": 2}`,
			[]*os.File{goodFile, kilntest.Open(t, good, oPath), goodFile}, api.CodeInvalidParameterValue, "not open for reading"},
		{"a FIFO", `{"name": "x-fifo", "disks": [{"file": 0, "format": "raw"}]}`, []*os.File{fifo(t, d, syscall.O_RDWR)}, api.CodeInvalidParameterValue, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := k.Raw(ctx, http.MethodPost, "/v1/images", strings.NewReader(tc.body), tc.files...)
			if err != nil {
				t.Fatal(err)
			}
			var ae api.Error
			if err := json.Unmarshal(body, &ae); err != nil || status != http.StatusBadRequest || ae.Code != tc.code || !strings.Contains(ae.Message, tc.says) {
				t.Errorf("status %d body %s; want 400 %s saying %s", status, body, tc.code, tc.says)
			}
		})
	}

	// kilnd kept none of the descriptors passed with refused requests.
	kilntest.Poll(t, 10*time.Second, "kilnd to hold no more descriptors than before the refused requests",
		func() bool { return kilntest.Descriptors(t, k.Cmd.Process.Pid) <= fdsBefore },
		func() string {
			return fmt.Sprintf("%d descriptors, %d before", kilntest.Descriptors(t, k.Cmd.Process.Pid), fdsBefore)
		})

	for _, ref := range []string{"ami-0123456789abcdef0", "no-such-image"} {
		if _, err := k.Image(ctx, ref); !isCode(err, api.CodeInvalidAMIIDNotFound) {
			t.Errorf("inspect %s: %v", ref, err)
		}
		if _, err := k.DeregisterImage(ctx, ref); !isCode(err, api.CodeInvalidAMIIDNotFound) {
			t.Errorf("deregister %s: %v", ref, err)
		}
	}

	for _, tc := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"malformed JSON", []byte(`{"name": "x",`), http.StatusBadRequest, api.CodeInvalidRequest},
		{"unknown field", []byte(`{"name": "xyz", "disks": [], "colour": "red"}`), http.StatusBadRequest, api.CodeUnknownParameter},
		{"wrong type", []byte(`{"name": 7}`), http.StatusBadRequest, api.CodeInvalidParameterValue},
		{"two values", []byte(`{"name": "xyz"} {}`), http.StatusBadRequest, api.CodeInvalidRequest},
		{"empty", nil, http.StatusBadRequest, api.CodeInvalidRequest},
		{"10 MiB", append(append([]byte(`{"name": "`), bytes.Repeat([]byte("a"), 10<<20)...), `"}`...), http.StatusRequestEntityTooLarge, api.CodeRequestTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, err := k.Raw(ctx, http.MethodPost, "/v1/images", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			var ae api.Error
			if err := json.Unmarshal(body, &ae); err != nil || status != tc.status || ae.Code != tc.code || ae.Message == "" {
				t.Errorf("status %d body %s; want %d %s", status, body, tc.status, tc.code)
			}
		})
	}

	for _, call := range [][2]string{{http.MethodPut, "/v1/images"}, {http.MethodGet, "/v2/images"}, {http.MethodPost, "/v1/images/x/colour"}} {
		status, body, err := k.Raw(ctx, call[0], call[1], nil)
		if err != nil || status != http.StatusNotFound || !strings.Contains(string(body), api.CodeInvalidAction) {
			t.Errorf("%s %s: %d %s %v", call[0], call[1], status, body, err)
		}
	}

	// Nothing of the refused requests was stored: the store holds exactly the blobs
	// it held before them.
	list, err := k.Images(ctx, client.ListImagesOptions{})
	if err != nil || len(list) != 1 || list[0].Name != "taken" {
		t.Errorf("images after refusals: %+v, %v", list, err)
	}
	after := k.blobs()
	for b := range after {
		if _, ok := blobsBefore[b]; !ok {
			t.Errorf("blob %s (%d bytes) was stored by a refused request", b, after[b])
		}
	}
	if len(after) != len(blobsBefore) || len(after) != 3 {
		t.Errorf("%d blobs after refusals, %d before; want the one image's 3", len(after), len(blobsBefore))
	}
	if in := k.ingests(); len(in) != 0 {
		t.Errorf("ingests left: %v", in)
	}
}

func TestSocket(t *testing.T) {
	k := newKilnd(t)
	// A second kilnd on the same socket is refused, and the first keeps serving.
	other := kilntest.Command(t, kilndBin, "--root", filepath.Join(filepath.Dir(k.Root), "other"), "--socket", k.Socket, "--accel", testAccel)
	out, err := other.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another kilnd is serving") {
		t.Errorf("second kilnd on the same socket: %v\n%s", err, out)
	}
	// A second kilnd on the same root is refused.
	other = kilntest.Command(t, kilndBin, "--root", k.Root, "--socket", k.Socket+"2")
	out, err = other.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("second kilnd on the same root: %v\n%s", err, out)
	}
	if _, err := k.Info(ctxT(t)); err != nil {
		t.Fatalf("the first kilnd stopped serving: %v", err)
	}
	st, err := os.Stat(k.Socket)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v, %v", st.Mode(), err)
	}
	// A stale socket (its daemon killed) is replaced.
	k.Kill()
	if _, err := os.Stat(k.Socket); err != nil {
		t.Fatalf("killed kilnd left no socket file to test with: %v", err)
	}
	k.Start()
}

func TestSnapshots(t *testing.T) {
	k := newKilnd(t)
	ctx := ctxT(t)
	d := kilntest.Disks(t)
	im, err := k.RegisterImage(ctx, api.RegisterImageRequest{Name: "snappy", Disks: []api.Disk{{Name: filepath.Join(d, "good.qcow2"), Format: "qcow2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if im, err = k.WaitImage(ctx, im.ID, nil); err != nil {
		t.Fatal(err)
	}
	list, err := k.Snapshots(ctx)
	if err != nil || len(list) != 1 || list[0].ID != im.BlockDeviceMappings[0].EBS.SnapshotID || list[0].ImageID != im.ID || len(list[0].Chain) != 1 {
		t.Fatalf("snapshots: %+v, %v", list, err)
	}
	sn, err := k.Snapshot(ctx, list[0].ID)
	if err != nil || sn.VolumeSize != 1 || sn.StorageSize == 0 {
		t.Errorf("inspect: %+v, %v", sn, err)
	}
	if _, err := k.DeleteSnapshot(ctx, sn.ID); !isCode(err, api.CodeIncorrectState) || !strings.Contains(err.Error(), im.ID) {
		t.Errorf("rm of a snapshot an image uses: %v", err)
	}
	if _, err := k.DeleteSnapshot(ctx, "snap-0123456789abcdef0"); !isCode(err, api.CodeInvalidSnapshotNotFound) {
		t.Errorf("rm of an unknown snapshot: %v", err)
	}
	if _, err := k.DeregisterImage(ctx, im.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Snapshot(ctx, sn.ID); !isCode(err, api.CodeInvalidSnapshotNotFound) {
		t.Errorf("the image's snapshot after deregister: %v", err)
	}
}
