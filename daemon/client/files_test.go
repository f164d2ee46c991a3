package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
)

// TestRegisterRefusesNonFiles: the client opens the files it passes without blocking
// and refuses anything but a regular file before it reads or sends it. A FIFO with no
// writer once blocked the client in open() forever.
func TestRegisterRefusesNonFiles(t *testing.T) {
	d := t.TempDir()
	fifo := filepath.Join(d, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	c := New(filepath.Join(d, "no-kilnd")) // never reached: the refusal comes first
	for _, tc := range []struct {
		what string
		req  api.RegisterImageRequest
	}{
		{"a FIFO disk", api.RegisterImageRequest{Name: "x", Disks: []api.Disk{{Name: fifo, Format: "raw"}}}},
		{"a directory disk", api.RegisterImageRequest{Name: "x", Disks: []api.Disk{{Name: d, Format: "raw"}}}},
		{"a character device kernel", api.RegisterImageRequest{Name: "x", Disks: []api.Disk{{Name: fifo, Format: "raw"}}, Kernel: "/dev/zero"}},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := c.RegisterImage(context.Background(), tc.req)
			done <- err
		}()
		select {
		case err := <-done:
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: %v; want InvalidArgument saying it is not a regular file", tc.what, err)
			}
		case <-time.After(10 * time.Second):
			// Unblock the open with a writer, so that the goroutine ends.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			t.Fatalf("%s: the client was still opening it after 10s", tc.what)
		}
	}
	var ae *api.Error
	if _, err := c.RegisterImage(context.Background(), api.RegisterImageRequest{Name: "x", Disks: []api.Disk{{Name: fifo, Format: "raw"}}}); errors.As(err, &ae) {
		t.Errorf("the refusal came from a daemon: %v", err)
	}
}
